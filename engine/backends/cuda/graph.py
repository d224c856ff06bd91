"""Graph-layer kernels on the GPU: darknet's shortcut add and the route copy/add.

Same index maps and float32 rounding points as the CPU backend
(:mod:`engine.backends.cpu.graph`); each iteration owns one output element.
"""

from __future__ import annotations

from numba import cuda


@cuda.jit
def shortcut(add, out, s1, s2):
    """``out[b,k,j·sample,i·sample] = s1·out + s2·add[b,k,j·stride,i·stride]`` over the
    overlap of ``add (B,C1,H1,W1)`` and ``out (B,C2,H2,W2)``."""
    batch, c1, h1, w1 = add.shape
    _, c2, h2, w2 = out.shape
    stride = max(1, w1 // w2)
    sample = max(1, w2 // w1)
    minc, minh, minw = min(c1, c2), min(h1, h2), min(w1, w2)
    for t in range(cuda.grid(1), batch * minc * minh * minw, cuda.gridsize(1)):
        i = t % minw
        j = (t // minw) % minh
        k = (t // (minw * minh)) % minc
        b = t // (minw * minh * minc)
        y = j * sample
        x = i * sample
        out[b, k, y, x] = s1 * out[b, k, y, x] + s2 * add[b, k, j * stride, i * stride]


@cuda.jit
def route_copy(src, out, batch, n, total, offset):
    """``out[b·total + offset + i] = src[b·n + i]``."""
    for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        b = t // n
        out[b * total + offset + t % n] = src[t]


@cuda.jit
def route_add(delta, dx, batch, n, total, offset):
    """``dx[b·n + i] += delta[b·total + offset + i]``."""
    for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        b = t // n
        dx[t] = dx[t] + delta[b * total + offset + t % n]
