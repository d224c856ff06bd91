"""darknet's ``[reorg]`` and ``[crop]`` layers (``reorg_layer.c``, ``crop_layer.c``).

``[reorg]`` moves values without arithmetic (:class:`engine.spec.ReorgSpec`): ``reorg`` mode
runs ``reorg_cpu`` with ``forward = reverse`` and backward with ``forward = !reverse`` (darknet
quirk: the non-reversed layer uses the map's inverse, see :mod:`engine.backends.cpu.reshape`);
``flatten`` transposes each image between C×(H·W) and (H·W)×C; ``extra`` copies the image
into the head of a longer flat row, the tail staying 0. darknet quirk: every mode's backward
ASSIGNS the previous layer's delta (``reorg_cpu``, ``memcpy``, ``copy_cpu``), wiping what
other readers of that layer added before it (``Layer.clobbers_dx``).

``[crop]`` (:class:`engine.spec.CropSpec`), as darknet's CPU ``forward_crop_layer``: in
training one offset ``(rand() % (H − h + 1), rand() % (W − w + 1))`` and, with ``flip``, one
coin per batch; at test the centre and no flip; values ``2·x − 1`` (``noadjust``: ``x``). The
draws are the run's uniforms (``floor(u·n)``), not darknet's ``rand()`` stream. Saturation and
exposure (darknet: GPU only) draw four uniforms per image, ``r0…r3``: ``sat = r0·(s − 1) + 1``,
inverted when ``r1 > .5``; likewise exposure with ``r2``, ``r3``. darknet quirk: backward does
nothing, so no gradient reaches the layers before a crop.
"""

from __future__ import annotations

import numpy as np

from dnupdate.engine.model.layers.base import Layer, LayerContext
from dnupdate.engine.model.shapes import LayerShape
from dnupdate.engine.spec import CropSpec, ReorgSpec

F32 = np.float32


class ReorgLayer(Layer):
    """See the module docstring."""

    clobbers_dx = True

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: ReorgSpec = shape.layer
        self.mode, self.reverse, self.stride = spec.mode, spec.reverse, spec.stride
        self.c, self.h, self.w = shape.input
        self.batch = ctx.batch

    def can_assign_dx(self) -> bool:
        return True  # every mode writes the whole input delta

    def _per_image(self, array, channels_last: bool):
        """``(B, C, H·W)`` or ``(B, H·W, C)`` view of a contiguous batch array."""
        n = self.h * self.w
        return (
            array.reshape(self.batch, n, self.c)
            if channels_last
            else array.reshape(self.batch, self.c, n)
        )

    def forward(self, x, train: bool) -> None:
        backend = self.backend
        if self.mode == "flatten":  # reverse=0: to H·W×C; reverse=1: back to C×H·W
            src = self._per_image(x, self.reverse)
            backend.permute_copy(src, self._per_image(self.output, not self.reverse), (0, 2, 1))
        elif self.mode == "extra":
            backend.route_copy(x, self.output, 0)
        else:
            backend.reorg(x, self.output, self.w, self.h, self.c, self.stride, self.reverse)

    def backward(self, x, dx) -> None:
        if dx is None:
            return
        backend = self.backend
        if self.mode == "flatten":
            src = self._per_image(self.delta, not self.reverse)
            backend.permute_copy(src, self._per_image(dx, self.reverse), (0, 2, 1))
        elif self.mode == "extra":
            backend.fill(dx, 0.0)
            backend.route_add(self.delta, dx, 0)
        else:
            backend.reorg(self.delta, dx, self.w, self.h, self.c, self.stride, not self.reverse)


class CropLayer(Layer):
    """See the module docstring."""

    def __init__(self, shape: LayerShape, ctx: LayerContext):
        super().__init__(shape, ctx)
        spec: CropSpec = shape.layer
        self.spec = spec
        self.c, self.h, self.w = shape.input
        self.draw = ctx.uniforms
        self.scale, self.trans = (F32(1), F32(0)) if spec.noadjust else (F32(2), F32(-1))
        self.recolour = self.c == 3 and (spec.saturation != 1.0 or spec.exposure != 1.0)
        self.no_colour = np.zeros((0, 2), dtype=F32)

    def window(self, train: bool) -> tuple[int, int, bool]:
        """``(top, left, flip)``: random in training (flip drawn first, only when enabled,
        as darknet's ``l.flip && rand() % 2``), the centre at test."""
        spec = self.spec
        rows, cols = self.h - spec.crop_height, self.w - spec.crop_width
        if not train:
            return rows // 2, cols // 2, False
        flip = bool(spec.flip and self.draw(1)[0] < 0.5)
        u = self.draw(2)
        return min(int(u[0] * (rows + 1)), rows), min(int(u[1] * (cols + 1)), cols), flip

    def colour(self, train: bool) -> np.ndarray:
        """``(B, 2)`` float32 saturation and exposure factors (``(0, 2)``: no recolouring)."""
        if not (train and self.recolour):
            return self.no_colour
        r = np.asarray(self.draw(4 * self.batch), dtype=F32).reshape(self.batch, 4)
        return np.stack(
            [_factor(r[:, 0], r[:, 1], self.spec.saturation),
             _factor(r[:, 2], r[:, 3], self.spec.exposure)], axis=1,
        ).astype(F32)  # fmt: skip

    def forward(self, x, train: bool) -> None:
        top, left, flip = self.window(train)
        self.backend.crop_forward(
            x, self.output, top, left, flip, self.scale, self.trans, self.colour(train)
        )

    def backward(self, x, dx) -> None:
        """darknet quirk: ``backward_crop_layer`` is empty."""


def _factor(amount: np.ndarray, invert: np.ndarray, limit: float) -> np.ndarray:
    """``a·(limit − 1) + 1``, inverted where ``invert > .5`` (float32, as the GPU kernel)."""
    value = amount * (F32(limit) - F32(1)) + F32(1)
    return np.where(invert > F32(0.5), F32(1) / value, value).astype(F32)
