"""Test helpers shared by the darknet tests: cfg text loading, float32 rounding, and darknet-style
layer specs built directly (without a cfg)."""

from __future__ import annotations

import struct

import pytest

from dnupdate.engine.config.darknet import load_darknet
from dnupdate.engine.spec import (
    ConfigError,
    ConnectedSpec,
    ConvSpec,
    Diagnostic,
    FillerSpec,
    RunSpec,
)


def f32(value: float) -> float:
    """``value`` rounded to float32, as darknet stores every float it parses."""
    return struct.unpack("f", struct.pack("f", value))[0]


def load_cfg(text: str, overrides=(), path: str = "t.cfg") -> RunSpec:
    """Load darknet cfg ``text`` as if read from ``path``, with ``--set`` style overrides."""
    return load_darknet(path, text, overrides)


def cfg_errors(text: str, overrides=()) -> list[Diagnostic]:
    """The error diagnostics of a cfg that must fail to load."""
    with pytest.raises(ConfigError) as info:
        load_cfg(text, overrides)
    return [d for d in info.value.diagnostics if d.severity == "error"]


def dk_conv(name: str, filters: int, size: int, *, bn=False, pad=0, **kw) -> ConvSpec:
    """A darknet-ordered ``size``×``size`` convolution with darknet's weight filler; ``pad`` on
    both axes."""
    return ConvSpec(
        name=name,
        param_order="darknet",
        filters=filters,
        kernel_h=size,
        kernel_w=size,
        pad_h=pad,
        pad_w=pad,
        batch_normalize=bn,
        weight_filler=FillerSpec(type="darknet_conv"),
        **kw,
    )


def dk_connected(name: str, outputs: int, *, bn=False, **kw) -> ConnectedSpec:
    """A darknet-ordered fully connected layer with darknet's weight filler."""
    return ConnectedSpec(
        name=name,
        param_order="darknet",
        outputs=outputs,
        batch_normalize=bn,
        weight_filler=FillerSpec(type="darknet_connected"),
        **kw,
    )
