"""im2col/col2im, darknet's 1×1 shortcut and pooling on the GPU.

Layouts and window rules are the CPU backend's (``engine.backends.cpu.conv``/``pool``). Each
kernel iteration owns one output element, and where the CPU kernel adds several contributions
into one element, the iteration adds them in the CPU's order, so results are the same floats:

* :func:`col2im_add` gathers per input pixel over ``(ky, kx)`` ascending — the order in which
  the CPU scatter loop reaches that pixel;
* max/average pooling backward run one thread per ``(image, channel)`` plane, in the CPU's
  window order (overlapping windows add in sequence);
* the 1×1 shortcut's backward (darknet quirk: reads may overlap across images) runs serially.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from dnupdate.engine.backends.cpu import pool as cpu_pool
from dnupdate.engine.backends.cuda.compile import device_function

FLT_MAX = cpu_pool.FLT_MAX
ave_window = device_function(cpu_pool._ave_window)


@cuda.jit
def im2col(x, col, kh, kw, sh, sw, ph, pw, dil, out_h, out_w):
    """``col[g, (c·kh + ky)·kw + kx, b·N + oy·out_w + ox] = x[b, g·C/G + c, iy, ix]`` or 0."""
    _, channels, height, width = x.shape
    groups, rows, columns = col.shape
    n = out_h * out_w
    per_group = channels // groups
    for t in range(cuda.grid(1), groups * rows * columns, cuda.gridsize(1)):
        column = t % columns
        r = (t // columns) % rows
        g = t // (columns * rows)
        b = column // n
        j = column % n
        kx = r % kw
        ky = (r // kw) % kh
        c = r // (kw * kh)
        iy = (j // out_w) * sh - ph + ky * dil
        ix = (j % out_w) * sw - pw + kx * dil
        if iy >= 0 and iy < height and ix >= 0 and ix < width:
            col[g, r, column] = x[b, g * per_group + c, iy, ix]
        else:
            col[g, r, column] = 0.0


@cuda.jit
def col2im_add(col, dx, kh, kw, sh, sw, ph, pw, dil, out_h, out_w):
    """``dx[b, ci, iy, ix] +=`` every column cell that im2col read from that pixel."""
    batch, channels, height, width = dx.shape
    groups = col.shape[0]
    n = out_h * out_w
    per_group = channels // groups
    total = batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        ix = t % width
        iy = (t // width) % height
        ci = (t // (width * height)) % channels
        b = t // (width * height * channels)
        g = ci // per_group
        c = ci % per_group
        value = dx[b, ci, iy, ix]
        for ky in range(kh):
            ty = iy + ph - ky * dil
            if ty < 0 or ty % sh != 0 or ty // sh >= out_h:
                continue
            oy = ty // sh
            for kx in range(kw):
                tx = ix + pw - kx * dil
                if tx < 0 or tx % sw != 0 or tx // sw >= out_w:
                    continue
                row = (c * kh + ky) * kw + kx
                value += col[g, row, b * n + oy * out_w + tx // sw]
        dx[b, ci, iy, ix] = value


@cuda.jit
def flat_as_col(flat, col, batch):
    """darknet quirk (1×1 shortcut): ``col[g, r, b·N + j] = flat[b·P + g·Q + r·N + j]`` or 0
    (``P`` floats per image, ``Q = P/G`` per group)."""
    groups, rows, columns = col.shape
    n = columns // batch
    per_image = flat.size // batch
    per_group = per_image // groups
    for t in range(cuda.grid(1), groups * rows * columns, cuda.gridsize(1)):
        column = t % columns
        r = (t // columns) % rows
        g = t // (columns * rows)
        b = column // n
        k = b * per_image + g * per_group + r * n + column % n
        col[g, r, column] = flat[k] if k < flat.size else 0.0


@cuda.jit
def flat_as_col_add(col, flat, batch):
    """Transpose of :func:`flat_as_col`, adding; serial (reads may overlap across images)."""
    if cuda.grid(1) != 0:
        return
    groups, rows, columns = col.shape
    n = columns // batch
    per_image = flat.size // batch
    per_group = per_image // groups
    for b in range(batch):
        for g in range(groups):
            start = b * per_image + g * per_group
            for r in range(rows):
                for j in range(n):
                    k = start + r * n + j
                    if k < flat.size:
                        flat[k] += col[g, r, b * n + j]


@cuda.jit
def strided_copy(src, offset, s0, s1, s2, s3, out, d1, d2, d3):
    """``out[i0, i1, i2, i3] = src[offset + i0·s0 + i1·s1 + i2·s2 + i3·s3]`` over the flat
    contiguous ``out`` of shape ``(·, d1, d2, d3)`` (permutes and strided views)."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i3 = t % d3
        i2 = (t // d3) % d2
        i1 = (t // (d3 * d2)) % d1
        i0 = t // (d3 * d2 * d1)
        out[t] = src[offset + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3]


@cuda.jit
def max_forward(x, y, argmax, kh, kw, sh, sw, off_h, off_w):
    """Max over the clipped window, strict ``>`` (first maximum wins), argmax or −1."""
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    total = batch * channels * out_h * out_w
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % out_w
        i = (t // out_w) % out_h
        c = (t // (out_w * out_h)) % channels
        b = t // (out_w * out_h * channels)
        best = -FLT_MAX
        arg = -1
        for n in range(kh):
            iy = i * sh - off_h + n
            if iy < 0 or iy >= height:
                continue
            for m in range(kw):
                ix = j * sw - off_w + m
                if ix < 0 or ix >= width:
                    continue
                v = x[b, c, iy, ix]
                if v > best:
                    best = v
                    arg = iy * width + ix
        y[b, c, i, j] = best
        argmax[b, c, i, j] = arg


@cuda.jit
def max_backward(dy, argmax, dx):
    """``dx[argmax] += dy``, one thread per plane in the CPU's window order."""
    batch, channels, _, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    for t in range(cuda.grid(1), batch * channels, cuda.gridsize(1)):
        b = t // channels
        c = t % channels
        for i in range(out_h):
            for j in range(out_w):
                arg = argmax[b, c, i, j]
                if arg >= 0:
                    dx[b, c, arg // width, arg % width] += dy[b, c, i, j]


@cuda.jit
def ave_forward(x, y, kh, kw, sh, sw, ph, pw):
    """Caffe AVE: window sum (float32, row-major) divided by the padded-window count."""
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    total = batch * channels * out_h * out_w
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % out_w
        i = (t // out_w) % out_h
        c = (t // (out_w * out_h)) % channels
        b = t // (out_w * out_h * channels)
        y0, y1, nh = ave_window(i, sh, ph, kh, height)
        x0, x1, nw = ave_window(j, sw, pw, kw, width)
        total_value = np.float32(0.0)
        for iy in range(y0, y1):
            for ix in range(x0, x1):
                total_value += x[b, c, iy, ix]
        y[b, c, i, j] = total_value / np.float32(nh * nw)


@cuda.jit
def ave_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """``dx[window] += dy / pool_size``, one thread per plane in the CPU's order."""
    batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    for t in range(cuda.grid(1), batch * channels, cuda.gridsize(1)):
        b = t // channels
        c = t % channels
        for i in range(out_h):
            y0, y1, nh = ave_window(i, sh, ph, kh, height)
            for j in range(out_w):
                x0, x1, nw = ave_window(j, sw, pw, kw, width)
                share = dy[b, c, i, j] / np.float32(nh * nw)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        dx[b, c, iy, ix] += share
