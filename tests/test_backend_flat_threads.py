"""The flat-buffer passes (update, rounding) run on every thread of the backend even where a
small network's layer kernels run on one, and the trainer's optimizer runs on the trainer's
own backend (a second, unconfigured backend ran the MLP's update on one thread)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from dnupdate.engine.backends.cpu import CpuBackend
from dnupdate.engine.backends.cpu import update as kernels

CFG = """[net]
batch=8
subdivisions=1
height=4
width=4
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=10
policy=constant

[connected]
output=600
activation=relu

[connected]
output=500
activation=linear

[softmax]
"""


def test_the_trainer_updates_on_its_own_backend(tmp_path):
    from dnupdate.engine.config import load_config
    from dnupdate.engine.training.step import Trainer

    cfg = tmp_path / "flat.cfg"
    cfg.write_text(CFG)
    trainer = Trainer(load_config(str(cfg)), seed=3)
    assert trainer.optimizer.backend is trainer.backend


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_a_large_flat_pass_uses_every_thread_and_restores_the_count():
    backend = CpuBackend()
    backend.configure(work=16)  # a small network: layer kernels on one thread
    assert numba.get_num_threads() == 1
    seen = []
    with backend._flat_pass(CpuBackend.PARALLEL_FLAT_MIN):
        seen.append(numba.get_num_threads())
    with backend._flat_pass(CpuBackend.PARALLEL_FLAT_MIN - 1):
        seen.append(numba.get_num_threads())
    assert seen == [backend._all_threads, 1]
    assert backend._all_threads >= 2
    assert numba.get_num_threads() == 1


def _darknet_update(backend, params, grads):
    sizes = np.array([params.size - 7, 7], np.int64)
    offsets = np.array([0, params.size - 7], np.int64)
    lr = np.full(2, np.float32(1e-3))
    decay = np.full(2, np.float32(-0.0005 * 8))
    coef = kernels.pack_coefficients(momentum=0.9, one_minus_momentum=np.float32(0.1))
    step_sq, weight_sq, grad_sq = np.zeros(2), np.zeros(2), np.zeros(2)
    carry = np.zeros_like(grads)
    empty = np.empty(0, np.float32)
    backend.fused_update(kernels.RULE_DARKNET_SGD, params, grads, empty, empty, offsets, sizes,
                         lr, decay, np.ones(2, np.int8), coef, step_sq, weight_sq,
                         carry=carry, grad_sq=grad_sq)  # fmt: skip
    return params, grads, carry, step_sq, weight_sq, grad_sq


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_the_update_on_every_thread_gives_the_one_thread_bits():
    rng = np.random.default_rng(5)
    size = CpuBackend.PARALLEL_FLAT_MIN + 12345
    params = rng.standard_normal(size).astype(np.float32)
    grads = rng.standard_normal(size).astype(np.float32)
    small, pinned = CpuBackend(), CpuBackend(threads=1)
    small.configure(work=16)
    wide = _darknet_update(small, params.copy(), grads.copy())
    pinned.configure(work=16)
    narrow = _darknet_update(pinned, params.copy(), grads.copy())
    for a, b in zip(wide, narrow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_large_fill_and_copy_are_shared_out_and_exact():
    """Flat buffers of at least ``PARALLEL_COPY_MIN`` floats are filled and copied in blocks
    on the threads: every element written (a length that is no multiple of a block), and the
    small or strided ones as NumPy does it."""
    backend = CpuBackend(threads=3)
    try:
        _fill_and_copy(backend)
    finally:
        CpuBackend(threads=1)


def _fill_and_copy(backend):
    size = backend.PARALLEL_COPY_MIN + (1 << 18) + 7
    out = np.full(size, np.nan, dtype=np.float32)
    backend.fill(out, 0.0)
    assert not out.any() and not np.signbit(out).any()
    backend.fill(out.reshape(-1, 1), -2.5)
    assert (out == -2.5).all()
    source = np.random.default_rng(1).standard_normal(size).astype(np.float32)
    backend.copy(source, out)
    assert out.tobytes() == source.tobytes()
    strided = np.zeros((8, 6), dtype=np.float32)[:, ::2]
    backend.fill(strided, 1.0)
    assert (strided == 1.0).all()
