"""Loss scaling: ``torch.amp.GradScaler``'s dynamic state machine and a fixed scale.

The scale ``S`` multiplies the loss before backward (in practice: the loss layers' deltas), so
small gradients move up out of the low precision's subnormal range; the weight gradients are
then multiplied by ``1/S`` before the update rule runs (or, AlexeyAB darknet's static
``loss_scale``, the darknet SGD rule takes ``lr/S`` and ``decay·B·S`` instead: see
:func:`engine.update.rules.Optimizer.step`).

GradScaler (``torch/amp/grad_scaler.py``, the ``_amp_update_scale_`` kernel), per update:

1. ``inv_scale = float32(1 / float64(S))`` (torch: ``scale.double().reciprocal().float()``);
   every gradient is multiplied by it in float32; ``found_inf`` = any gradient is inf/NaN;
2. the optimizer step is skipped when ``found_inf`` (weights and optimizer state untouched);
3. ``found_inf``: ``S ← S·backoff``, ``tracker ← 0``; else ``tracker ← tracker + 1`` and, when
   it reaches ``growth_interval``, ``S ← S·growth`` (kept only if finite), ``tracker ← 0``.

``S`` is a float32 (torch keeps it in a float32 tensor; the products are formed in double and
stored as float32). The state a checkpoint must carry is ``(S, tracker)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dnupdate.engine.spec import PrecisionSpec

__all__ = ["LossScaler", "ScalerStateError"]


class ScalerStateError(ValueError):
    """A saved scaler state is missing or not a scale and a counter."""


@dataclass
class LossScaler:
    """The loss scale of one run. ``mode``: ``none`` (S = 1, nothing skipped), ``static``
    (S fixed), ``dynamic`` (GradScaler). ``scale`` S (float32), ``tracker`` GradScaler's
    growth tracker (clean updates since the last change), ``skipped`` the updates skipped."""

    mode: str = "none"
    scale: float = 1.0
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000
    tracker: int = 0
    skipped: int = 0

    @classmethod
    def from_spec(cls, spec: PrecisionSpec) -> LossScaler:
        scale = 1.0 if spec.loss_scale == "none" else float(np.float32(spec.scale))
        return cls(spec.loss_scale, scale, spec.growth, spec.backoff, spec.growth_interval, 0, 0)

    @property
    def inv_scale(self) -> np.float32:
        """``float32(1 / float64(S))``, the factor GradScaler unscales gradients with."""
        return np.float32(1.0 / float(self.scale))

    def update(self, found_inf: bool) -> None:
        """GradScaler's ``update()`` after one iteration (dynamic mode; otherwise only the
        count of skipped updates moves)."""
        if found_inf:
            self.skipped += 1
        if self.mode != "dynamic":
            return
        if found_inf:
            self.scale = float(np.float32(self.scale * self.backoff))
            self.tracker = 0
            return
        successful = self.tracker + 1
        if successful == self.growth_interval:
            grown = float(np.float32(self.scale * self.growth))
            if math.isfinite(grown):
                self.scale = grown
            self.tracker = 0
        else:
            self.tracker = successful

    def state_dict(self) -> dict[str, float | int]:
        """``{"scale", "tracker", "skipped"}``: restored bit for bit by :meth:`load_state_dict`."""
        return {"scale": self.scale, "tracker": self.tracker, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        try:
            scale = float(np.asarray(state["scale"]).item())
            tracker = int(np.asarray(state["tracker"]).item())
            skipped = int(np.asarray(state.get("skipped", 0)).item())
        except (KeyError, TypeError, ValueError) as exc:
            raise ScalerStateError(f"loss scaler state is damaged: {exc}") from None
        if not (math.isfinite(scale) and scale > 0 and tracker >= 0 and skipped >= 0):
            raise ScalerStateError(
                f"loss scaler state holds scale {scale}, tracker {tracker}, skipped {skipped}"
            )
        self.scale, self.tracker, self.skipped = scale, tracker, skipped
