"""darknet's classifier data augmentation, for images larger than the net (``cifar.cfg``: a
28×28 net on 32×32 CIFAR-10): ``train_classifier`` → ``load_data_augment`` →
``load_image_augment_paths`` (``data.c``) and the image functions of ``image.c``.

Training, per image, in darknet's order:

1. ``random_augment_args``: ``aspect = rand_scale(aspect)`` (uniform in ``[1, aspect]``, then
   inverted on a coin); ``r = rand_int(min, max)`` with ``min = (int)(min_ratio·w)``,
   ``max = (int)(max_ratio·w)`` (``min_crop``/``max_crop`` ÷ ``width`` by default); the
   shorter side ``m = (int)min(H, W·aspect)``, ``scale = r/m``; ``rad = uniform(−angle,
   angle)·2π/360``; ``dx = uniform(±(W·scale/aspect − w)/2)``, ``dy = uniform(±(H·scale −
   w)/2)`` (darknet quirk: ``w`` in both);
2. ``rotate_crop_image``: output pixel ``(x, y)`` samples the source at
   ``rx = cos·((x − w/2)/s·a + dx/s·a) − sin·((y − h/2)/s + dy/s) + W/2``,
   ``ry = sin·(…) + cos·(…) + H/2`` (double, stored as float) by ``bilinear_interpolate``
   (zero outside the image);
3. a horizontal flip with probability 1/2 (darknet always flips in classifier training);
4. ``random_distort_image`` (3-channel images only; darknet asserts 3 channels): HSV with
   ``H/6``, ``S·rand_scale(saturation)``, ``V·rand_scale(exposure)``, ``H + uniform(±hue)``
   wrapped into ``[0, 1]``, back to RGB, clamped to ``[0, 1]``. Skipped when hue is 0 and
   saturation and exposure are 1 (darknet's round trip then only rounds).

Test (``center_crop_image``, as ``validate_classifier_single``): the central ``m×m`` square
(``m`` = the shorter side) resized to the net's ``w×h`` by darknet's two-pass
``resize_image`` (not a crop: CIFAR's 32×32 becomes 28×28 by interpolation).

Pixels are ``byte/255`` first, as ``load_image_color``. The draws come from the sampler's
NumPy generator, not darknet's ``rand()``: same distributions, different numbers.
"""

from __future__ import annotations

import math

import numpy as np

from dnupdate.engine.spec import DarknetAugmentSpec

F32 = np.float32


def crop_range(spec: DarknetAugmentSpec) -> tuple[int, int]:
    """``(args.min, args.max)``: ``min_ratio·w`` and ``max_ratio·w`` in float, truncated."""
    w = F32(spec.width)
    return int(F32(spec.min_ratio) * w), int(F32(spec.max_ratio) * w)


def _rand_scale(rng: np.random.Generator, s: float, n: int) -> np.ndarray:
    """darknet ``rand_scale``: uniform in [1, s] (either order), inverted on a coin."""
    low, high = min(1.0, s), max(1.0, s)
    scale = rng.uniform(low, high, n).astype(F32)
    keep = rng.integers(0, 2, n).astype(bool)
    return np.where(keep, scale, F32(1) / scale).astype(F32)


def augment_args(rng, n: int, image_hw: tuple[int, int], spec: DarknetAugmentSpec):
    """Per image ``(rad, scale, dx, dy, aspect)`` float64 arrays (``random_augment_args``)."""
    height, width = image_hw
    w = spec.width
    aspect = _rand_scale(rng, spec.aspect, n).astype(np.float64)
    low, high = sorted(crop_range(spec))
    r = rng.integers(low, high + 1, n)
    shorter = np.where(height < width * aspect, height, width * aspect).astype(np.int64)
    scale = (r.astype(F32) / shorter.astype(F32)).astype(np.float64)
    rad = rng.uniform(-spec.angle, spec.angle, n) * 2 * math.pi / 360.0 if spec.angle else 0 * r
    half_x = (width * scale / aspect - w) / 2.0
    half_y = (height * scale - w) / 2.0
    dx = rng.uniform(-1.0, 1.0, n) * np.abs(half_x)
    dy = rng.uniform(-1.0, 1.0, n) * np.abs(half_y)
    return rad.astype(np.float64), scale, dx, dy, aspect


def bilinear(images: np.ndarray, rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """darknet ``bilinear_interpolate`` at float32 coordinates ``(n, h, w)``, zero outside;
    ``images`` ``(n, C, H, W)`` → ``(n, C, h, w)``."""
    n, _, height, width = images.shape
    ix, iy = np.floor(rx).astype(np.int64), np.floor(ry).astype(np.int64)
    dx, dy = (rx - ix).astype(F32), (ry - iy).astype(F32)
    one = F32(1)
    batch = np.arange(n)[:, None, None]

    def pixel(x, y):
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        values = images[batch, :, np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
        return np.where(inside[..., None], values, F32(0))  # (n, h, w, C)

    value = (
        ((one - dy) * (one - dx))[..., None] * pixel(ix, iy)
        + (dy * (one - dx))[..., None] * pixel(ix, iy + 1)
        + ((one - dy) * dx)[..., None] * pixel(ix + 1, iy)
        + (dy * dx)[..., None] * pixel(ix + 1, iy + 1)
    )
    return np.ascontiguousarray(value.transpose(0, 3, 1, 2), dtype=F32)


def rotate_crop(images: np.ndarray, args, size: int) -> np.ndarray:
    """``rotate_crop_image`` of every image to ``size×size`` with its own arguments."""
    rad, scale, dx, dy, aspect = (np.asarray(a, np.float64)[:, None, None] for a in args)
    _, _, height, width = images.shape
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (x - size / 2.0) / scale * aspect + dx / scale * aspect
    v = (y - size / 2.0) / scale + dy / scale
    rx = (np.cos(rad) * u - np.sin(rad) * v + width / 2.0).astype(F32)
    ry = (np.sin(rad) * u + np.cos(rad) * v + height / 2.0).astype(F32)
    return bilinear(images, rx, ry)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """darknet ``rgb_to_hsv`` on ``(n, 3, h, w)``: hue in [0, 1) (``h/6``), 0 for grey."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    big, small = rgb.max(axis=1), rgb.min(axis=1)
    delta = big - small
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(big == 0, F32(0), delta / big)
        safe = np.where(delta == 0, F32(1), delta)
        by_green = np.where(g == big, F32(2) + (b - r) / safe, F32(4) + (r - g) / safe)
        hue = np.where(r == big, (g - b) / safe, by_green)
    hue = np.where(delta == 0, F32(0), hue)
    hue = np.where(hue < 0, hue + F32(6), hue)
    hue = np.where(big == 0, F32(0), hue / F32(6))
    return np.stack([hue, s, big], axis=1).astype(F32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """darknet ``hsv_to_rgb`` on ``(n, 3, h, w)`` (hue in [0, 1])."""
    h6 = F32(6) * hsv[:, 0]
    s, v = hsv[:, 1], hsv[:, 2]
    index = np.floor(h6).astype(np.int64)
    f = (h6 - index).astype(F32)
    one = F32(1)
    p, q, t = v * (one - s), v * (one - s * f), v * (one - s * (one - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    choice = np.clip(index, 0, 5)
    out = np.empty_like(hsv)
    for channel in range(3):
        options = np.stack([row[channel] for row in table])
        picked = np.take_along_axis(options, choice[None], axis=0)[0]
        out[:, channel] = np.where(s == 0, v, picked)
    return out


def distort(rgb: np.ndarray, rng, spec: DarknetAugmentSpec) -> np.ndarray:
    """``random_distort_image`` of each image (see the module docstring)."""
    n = rgb.shape[0]
    dhue = rng.uniform(-spec.hue, spec.hue, n).astype(F32) if spec.hue else np.zeros(n, F32)
    dsat = _rand_scale(rng, spec.saturation, n)
    dexp = _rand_scale(rng, spec.exposure, n)
    hsv = rgb_to_hsv(rgb)
    hsv[:, 1] *= dsat[:, None, None]
    hsv[:, 2] *= dexp[:, None, None]
    hue = hsv[:, 0] + dhue[:, None, None]
    hue = np.where(hue > 1, hue - F32(1), hue)
    hsv[:, 0] = np.where(hue < 0, hue + F32(1), hue)
    return np.clip(hsv_to_rgb(hsv), F32(0), F32(1))


def augment_train(images: np.ndarray, rng, spec: DarknetAugmentSpec) -> np.ndarray:
    """Training augmentation of ``(n, C, H, W)`` float32 images in [0, 1] (module docstring)."""
    n, channels, height, width = images.shape
    if spec.center:  # darknet's [net] center=1: the test-time crop in training too
        out = center_crop(images, spec.width, spec.width)
    else:
        out = rotate_crop(images, augment_args(rng, n, (height, width), spec), spec.width)
    flips = rng.integers(0, 2, n).astype(bool)
    out[flips] = out[flips][..., ::-1]
    colour = spec.hue != 0 or spec.saturation != 1 or spec.exposure != 1
    if channels == 3 and colour:
        out = distort(out, rng, spec)
    return np.ascontiguousarray(out, dtype=F32)


def describe(spec: DarknetAugmentSpec, image: tuple[int, int, int]) -> str:
    """One line saying what the sampler does to ``image``-shaped data for this spec."""
    low, high = sorted(crop_range(spec))
    parts = [f"shorter side scaled to {low}" + (f"..{high}" if high != low else "")]
    parts += [f"aspect ×{_factors(spec.aspect)}"] if spec.aspect != 1 else []
    parts += [f"rotation ±{spec.angle:g}°"] if spec.angle else []
    parts += ["random translation", "flip 1/2"]
    if image[0] == 3:
        parts += [f"hue ±{spec.hue:g}"] if spec.hue else []
        parts += [f"saturation ×{_factors(spec.saturation)}"] * (spec.saturation != 1)
        parts += [f"exposure ×{_factors(spec.exposure)}"] * (spec.exposure != 1)
    train = "centre square resized, flip 1/2" if spec.center else ", ".join(parts)
    c, h, w = image
    return (
        f"images are {c}×{h}×{w}, the net {c}×{spec.height}×{spec.width}: darknet's classifier "
        f"augmentation in training ({train}, bilinear {spec.width}×{spec.width} window); at test "
        f"the centre {min(h, w)}×{min(h, w)} square resized to {spec.height}×{spec.width} "
        "(center_crop_image)"
    )


def _factors(s: float) -> str:
    """The range ``rand_scale(s)`` draws from: ``min(s, 1/s)..max(s, 1/s)``."""
    low, high = sorted((s, 1 / s))
    return f"{low:.3g}..{high:.3g}"


def resize_image(images: np.ndarray, h: int, w: int) -> np.ndarray:
    """darknet ``resize_image`` (two passes, float32, its edge rules) of ``(n, C, H, W)``."""
    n, channels, height, width = images.shape
    w_scale = F32(width - 1) / F32(w - 1) if w > 1 else F32(0)
    h_scale = F32(height - 1) / F32(h - 1) if h > 1 else F32(0)
    part = np.empty((n, channels, height, w), F32)
    for c in range(w):
        if c == w - 1 or width == 1:
            part[..., c] = images[..., width - 1]
            continue
        sx = F32(c) * w_scale
        ix = int(sx)
        dx = F32(sx - F32(ix))
        part[..., c] = (F32(1) - dx) * images[..., ix] + dx * images[..., ix + 1]
    out = np.empty((n, channels, h, w), F32)
    for r in range(h):
        sy = F32(r) * h_scale
        iy = int(sy)
        dy = F32(sy - F32(iy))
        out[:, :, r] = (F32(1) - dy) * part[:, :, iy]
        if r == h - 1 or height == 1:
            continue
        out[:, :, r] += dy * part[:, :, iy + 1]
    return out


def center_crop(images: np.ndarray, h: int, w: int) -> np.ndarray:
    """darknet ``center_crop_image``: the central square of side ``min(H, W)`` resized to
    ``w×h``."""
    _, _, height, width = images.shape
    m = min(height, width)
    top, left = (height - m) // 2, (width - m) // 2
    return resize_image(np.ascontiguousarray(images[:, :, top : top + m, left : left + m]), h, w)
