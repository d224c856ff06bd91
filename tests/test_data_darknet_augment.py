"""darknet's classifier crop and augmentation for data larger than the net (issue 17 item 13:
Debian's ``cifar.cfg``, a 28×28 net, on 32×32 CIFAR-10), against Python transcriptions of
``image.c``, and the 1000-class-net-on-10-class-data warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dnupdate.cli.main import app
from dnupdate.engine.config import load_config
from dnupdate.engine.data import BatchSampler, DataError
from dnupdate.engine.data.darknet_augment import (
    augment_train,
    center_crop,
    crop_range,
    hsv_to_rgb,
    resize_image,
    rgb_to_hsv,
    rotate_crop,
)
from dnupdate.engine.data.dataset import Dataset
from dnupdate.engine.spec import DarknetAugmentSpec, DataSourceSpec

runner = CliRunner()
F = np.float32
RNG = np.random.default_rng(3)

CFG = """[net]
batch=4
subdivisions=1
height={size}
width={size}
channels=3
max_crop=8
min_crop=8
hue=.1
saturation=.75
exposure=.75
learning_rate=0.1
max_batches={batches}

[convolutional]
filters=4
size=3
pad=1
activation=leaky

[avgpool]

[connected]
output={outputs}
activation=linear

[softmax]
"""


def resize_reference(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """``resize_image`` of one C×H×W image, loop for loop in float32."""
    c, height, width = im.shape
    part = np.zeros((c, height, w), F)
    resized = np.zeros((c, h, w), F)
    w_scale = F(F(width - 1) / F(w - 1))
    h_scale = F(F(height - 1) / F(h - 1))
    for k in range(c):
        for r in range(height):
            for col in range(w):
                if col == w - 1 or width == 1:
                    val = im[k, r, width - 1]
                else:
                    sx = F(col * w_scale)
                    ix = int(sx)
                    dx = F(sx - ix)
                    val = F(F(F(1) - dx) * im[k, r, ix]) + F(dx * im[k, r, ix + 1])
                part[k, r, col] = val
    for k in range(c):
        for r in range(h):
            sy = F(r * h_scale)
            iy = int(sy)
            dy = F(sy - iy)
            for col in range(w):
                resized[k, r, col] = F(F(1) - dy) * part[k, iy, col]
            if r == h - 1 or height == 1:
                continue
            for col in range(w):
                resized[k, r, col] = F(resized[k, r, col] + F(dy * part[k, iy + 1, col]))
    return resized


def test_resize_and_centre_crop_match_image_c():
    images = RNG.random((2, 3, 9, 7), dtype=F)
    for i in range(2):
        np.testing.assert_array_equal(
            resize_image(images, 5, 4)[i], resize_reference(images[i], 4, 5)
        )
    square = center_crop(images, 5, 5)  # the central 7×7, resized
    np.testing.assert_array_equal(square[1], resize_reference(images[1, :, 1:8, :], 5, 5))


def test_rotate_crop_without_motion_is_the_centre_window():
    """scale 1, no angle, no translation: darknet samples integer positions (the centre
    window for an even margin)."""
    images = RNG.random((2, 3, 8, 8), dtype=F)
    zeros = np.zeros(2)
    out = rotate_crop(images, (zeros, np.ones(2), zeros, zeros, np.ones(2)), 6)
    np.testing.assert_array_equal(out, images[:, :, 1:7, 1:7])
    shifted = rotate_crop(images, (zeros, np.ones(2), zeros + 1, zeros - 1, np.ones(2)), 6)
    np.testing.assert_array_equal(shifted, images[:, :, 0:6, 2:8])


def test_hsv_round_trip_and_channels():
    rgb = RNG.random((3, 3, 4, 4), dtype=F)
    rgb[0, :, 0, 0] = 0.5  # grey
    rgb[1, :, 1, 1] = 0.0  # black
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=2e-6)
    hsv = rgb_to_hsv(F([[[[1.0]], [[0.0]], [[0.0]]]]))  # red: hue 0, s 1, v 1
    assert hsv.reshape(-1).tolist() == [0.0, 1.0, 1.0]


def test_crop_range_is_darknets_truncated_ratio():
    spec = DarknetAugmentSpec(width=28, height=28, min_ratio=F(32) / F(28), max_ratio=2.0)
    assert crop_range(spec) == (32, 56)


def test_training_batches_are_28_pixel_windows_in_range():
    spec = DarknetAugmentSpec(
        width=6, height=6, min_ratio=F(8) / F(6), max_ratio=F(8) / F(6), hue=0.1,
        saturation=0.75, exposure=0.75,
    )  # fmt: skip
    images = RNG.random((16, 3, 8, 8), dtype=F)
    out = augment_train(images, np.random.default_rng(0), spec)
    assert out.shape == (16, 3, 6, 6) and out.dtype == F
    assert out.min() >= 0.0 and out.max() <= 1.0
    again = augment_train(images, np.random.default_rng(0), spec)
    np.testing.assert_array_equal(out, again)  # the sampler's generator decides


def dataset(count=12, size=8) -> Dataset:
    images = RNG.integers(0, 256, (count, 3, size, size)).astype(np.uint8)
    return Dataset("tiny", images, np.arange(count) % 3, 3)


def test_sampler_crops_darknet_data_larger_than_the_net():
    run = load_config("c.cfg", text=CFG.format(size=6, batches=2, outputs=3))
    data = dataset()
    train = BatchSampler(data, run.data.train, framework="darknet", phase="train")
    test = BatchSampler(data, run.data.test, framework="darknet", phase="test")
    assert train.output_shape == test.output_shape == (3, 6, 6)
    images, _ = train.next_batch()
    assert images.shape == (4, 3, 6, 6) and images.min() >= 0 and images.max() <= 1
    assert "darknet's classifier augmentation" in train.notes[0]
    test_images, _ = test.next_batch()
    raw = data.images[:4].astype(np.float64) / 255
    np.testing.assert_array_equal(test_images, center_crop(raw.astype(F), 6, 6))
    same = BatchSampler(data, run.data.train, framework="darknet", phase="train")
    assert np.array_equal(same.next_batch()[0], images)  # reproducible from the seed


def test_same_size_data_is_untouched_and_caffe_never_augments():
    run = load_config("c.cfg", text=CFG.format(size=8, batches=2, outputs=3))
    sampler = BatchSampler(dataset(), run.data.train, framework="darknet", phase="train")
    assert sampler.augment is None and sampler.output_shape == (3, 8, 8)
    source = DataSourceSpec(batch_size=4, augment=run.data.train.augment)
    assert BatchSampler(dataset(), source, framework="caffe").augment is None


def test_a_non_square_net_smaller_than_the_data_is_refused():
    spec = DarknetAugmentSpec(width=6, height=5)
    with pytest.raises(DataError, match="square"):
        BatchSampler(dataset(), DataSourceSpec(batch_size=2, augment=spec), framework="darknet")


def write_data(tmp_path, size=8, count=24):
    images = RNG.integers(0, 256, (count, 3, size, size)).astype(np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x=images, y=np.arange(count) % 10, classes=np.array(10))
    return path


def test_cli_trains_a_smaller_net_and_says_what_it_simulates(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG.format(size=6, batches=3, outputs=10))
    args = [str(cfg), "--data", f"npz:{write_data(tmp_path)}", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", *args, "--eval-every", "3", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    statuses = " ".join(e.get("message", "") for e in events if e.get("event") == "status")
    assert "images are 3×8×8, the net 3×6×6" in statuses
    assert "centre 8×8 square resized to 6×6" in statuses
    assert "outputs" not in statuses  # 10 outputs for 10 classes: no warning


def test_a_1000_output_net_on_10_class_data_is_warned_about(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG.format(size=8, batches=1, outputs=1000))
    args = [str(cfg), "--data", f"npz:{write_data(tmp_path)}", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", *args, "--eval-every", "0"])
    assert result.exit_code == 0, result.output
    assert "has 1000 outputs but d.npz has 10 classes" in result.stderr


def test_config_notes_say_when_the_augmentation_keys_apply():
    run = load_config("c.cfg", text=CFG.format(size=6, batches=2, outputs=3))
    notes = {d.key: d.message for d in run.diagnostics}
    assert "larger than the net" in notes["hue"] and "larger than the net" in notes["max_crop"]
    assert run.data.train.augment.min_ratio == pytest.approx(8 / 6)


def test_data_smaller_than_a_darknet_net_suggests_the_size(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG.format(size=10, batches=1, outputs=10))
    args = [str(cfg), "--data", f"npz:{write_data(tmp_path)}", "--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", *args, "--eval-every", "0"])
    assert result.exit_code == 1
    assert "--set height=8 --set width=8" in result.stderr
