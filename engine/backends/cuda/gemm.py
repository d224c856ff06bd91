"""A tiled shared-memory SGEMM over strided, batched operands (no cuBLAS needed).

``C[i0, i1] (=|+= alpha·) A[i0, i1] @ B[i0, i1]`` for every pair of the two leading (stack)
axes. Every operand is given as its root 1-D allocation, an element offset and four element
strides ``(s0, s1, rows, cols)``; a stride of 0 broadcasts (the conv layer's weights over the
batch), swapped strides read a transposed view without a copy. Each output element sums its
``K`` products in ascending ``k`` in float32 (what a naive loop does; BLAS may block ``K``
differently, so CPU and GPU agree to float32 rounding, not bit for bit).

Blocks of ``TILE × TILE`` threads walk the output tiles with a block-stride loop; each step
stages one ``TILE``-wide slab of ``A`` and of ``B`` in shared memory (:func:`gemm`). Under the
simulator, where every ``syncthreads`` costs a round of Python thread polling, the backend runs
:func:`gemm_direct` instead: one output element per iteration, the same products summed in the
same order (the tests run both kernels).
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32

from dnupdate.engine.backends.cuda.compile import SIMULATOR

TILE = 4 if SIMULATOR else 16
MAX_BLOCKS = 1 if SIMULATOR else 8192


@cuda.jit
def gemm(
    a, a_off, a_s0, a_s1, a_sr, a_sc,
    b, b_off, b_s0, b_s1, b_sr, b_sc,
    c, c_off, c_s0, c_s1, c_sr, c_sc,
    d0, d1, m, n, k, alpha, accumulate,
):  # fmt: skip
    """See the module docstring; ``accumulate``: ``C ← C + alpha·(A@B)`` instead of ``C ← A@B``."""
    tile_a = cuda.shared.array((TILE, TILE), float32)
    tile_b = cuda.shared.array((TILE, TILE), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tiles_m = (m + TILE - 1) // TILE
    tiles_n = (n + TILE - 1) // TILE
    total = d0 * d1 * tiles_m * tiles_n
    for tile in range(cuda.blockIdx.x, total, cuda.gridDim.x):
        tn = tile % tiles_n
        tm = (tile // tiles_n) % tiles_m
        pair = tile // (tiles_n * tiles_m)
        i1 = pair % d1
        i0 = pair // d1
        row = tm * TILE + ty
        col = tn * TILE + tx
        a_base = a_off + i0 * a_s0 + i1 * a_s1
        b_base = b_off + i0 * b_s0 + i1 * b_s1
        acc = np.float32(0.0)
        for k0 in range(0, k, TILE):
            ka = k0 + tx
            if row < m and ka < k:
                tile_a[ty, tx] = a[a_base + row * a_sr + ka * a_sc]
            else:
                tile_a[ty, tx] = 0.0
            kb = k0 + ty
            if kb < k and col < n:
                tile_b[ty, tx] = b[b_base + kb * b_sr + col * b_sc]
            else:
                tile_b[ty, tx] = 0.0
            cuda.syncthreads()
            for q in range(min(TILE, k - k0)):
                acc = acc + tile_a[ty, q] * tile_b[q, tx]
            cuda.syncthreads()
        if row < m and col < n:
            at = c_off + i0 * c_s0 + i1 * c_s1 + row * c_sr + col * c_sc
            if accumulate:
                c[at] = c[at] + alpha * acc
            else:
                c[at] = acc


@cuda.jit
def gemm_direct(
    a, a_off, a_s0, a_s1, a_sr, a_sc,
    b, b_off, b_s0, b_s1, b_sr, b_sc,
    c, c_off, c_s0, c_s1, c_sr, c_sc,
    d0, d1, m, n, k, alpha, accumulate,
):  # fmt: skip
    """:func:`gemm` without shared memory: each iteration sums one output's ``k`` products."""
    for t in range(cuda.grid(1), d0 * d1 * m * n, cuda.gridsize(1)):
        col = t % n
        row = (t // n) % m
        pair = t // (n * m)
        i1 = pair % d1
        i0 = pair // d1
        a_at = a_off + i0 * a_s0 + i1 * a_s1 + row * a_sr
        b_at = b_off + i0 * b_s0 + i1 * b_s1 + col * b_sc
        acc = np.float32(0.0)
        for q in range(k):
            acc = acc + a[a_at + q * a_sc] * b[b_at + q * b_sr]
        at = c_off + i0 * c_s0 + i1 * c_s1 + row * c_sr + col * c_sc
        if accumulate:
            c[at] = c[at] + alpha * acc
        else:
            c[at] = acc


def launch_shape(stacks: int, m: int, n: int) -> tuple[int, tuple[int, int]]:
    """``(blocks, (TILE, TILE))`` for ``stacks`` products of ``m × n`` outputs."""
    tiles = stacks * (-(-m // TILE)) * (-(-n // TILE))
    return max(1, min(MAX_BLOCKS, tiles)), (TILE, TILE)
