"""Graph-layer kernels on the GPU: darknet's shortcut add and the route copy/add, and the
``[reorg]`` permutation and ``[crop]`` window.

Same index maps and float32 rounding points as the CPU backend
(:mod:`engine.backends.cpu.graph`); each iteration owns one output element.
"""

from __future__ import annotations

from numba import cuda

from dnupdate.engine.backends.cpu import reshape as cpu_reshape
from dnupdate.engine.backends.cuda.compile import device_function


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
def route_copy(src, out, batch, n, total, offset, stride, start):
    """``out[b·total + offset + i] = src[b·stride + start + i]`` for ``i < n``."""
    for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        b = t // n
        out[b * total + offset + t % n] = src[b * stride + start + t % n]


@cuda.jit
def route_add(delta, dx, batch, n, total, offset, stride, start):
    """``dx[b·stride + start + i] += delta[b·total + offset + i]`` for ``i < n``."""
    for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
        b = t // n
        j = b * stride + start + t % n
        dx[j] = dx[j] + delta[b * total + offset + t % n]


# ---- [reorg] and [crop] ------------------------------------------------------------------------

levels_channel = device_function(cpu_reshape.levels_channel)


@cuda.jit
def reorg(x, w, h, c, batch, stride, forward, out):
    """darknet ``reorg_cpu`` (see :mod:`engine.backends.cpu.reshape`): one thread per input
    position; each assigns one element."""
    out_c = c // (stride * stride)
    for t in range(cuda.grid(1), batch * c * h * w, cuda.gridsize(1)):
        i = t % w
        j = (t // w) % h
        k = (t // (w * h)) % c
        b = t // (w * h * c)
        c2 = k % out_c
        offset = k // out_c
        w2 = i * stride + offset % stride
        h2 = j * stride + offset // stride
        out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
        if forward:
            out[out_index] = x[t]
        else:
            out[t] = x[out_index]


@cuda.jit
def crop(x, out, top, left, flip, scale, trans, colour):
    """darknet ``forward_crop_layer``: one thread per output pixel ``(b, i, j)``, all its
    channels (recoloured first when ``colour`` has rows)."""
    batch, channels, _, width = x.shape
    _, _, out_h, out_w = out.shape
    recolour = colour.shape[0] > 0
    for t in range(cuda.grid(1), batch * out_h * out_w, cuda.gridsize(1)):
        j = t % out_w
        i = (t // out_w) % out_h
        b = t // (out_w * out_h)
        row = i + top
        col = width - left - j - 1 if flip else j + left
        if recolour:
            r = x[b, 0, row, col]
            g = x[b, 1, row, col]
            bl = x[b, 2, row, col]
            for k in range(3):
                value = levels_channel(r, g, bl, colour[b, 0], colour[b, 1], k)
                out[b, k, i, j] = value * scale + trans
        else:
            for k in range(channels):
                out[b, k, i, j] = x[b, k, row, col] * scale + trans
