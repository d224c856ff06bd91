"""A register-blocked GEMM tile written in LLVM IR: the inner loop of the direct convolution
(CPU, Numba ``@intrinsic`` + llvmlite ``ir``).

:func:`make_tile` builds, for a row count ``R`` and ``J`` vectors of 16 floats, the kernel

    ``C[r, j] (+)= Σ_k A[k, r] · B[off[k] + j]``   for ``r < rows``, ``j < cols ≤ 16·J``

with ``A`` packed ``(K, R)`` (one tile's rows side by side, :func:`pack_rows`) and ``B`` read
through an offset table: row ``k`` of the right operand starts at ``B + off[k]`` floats, so the
rows can be shifted reads of one zero-padded image (an implicit GEMM: no im2col matrix is
written). The ``R·J`` accumulators are ``<16 x float>`` registers (phi nodes of one IR loop over
``k``); each step loads the ``J`` vectors of row ``k`` of ``B`` (masked loads where
``cols < 16·J``: the lanes past ``cols`` read nothing and are never stored), broadcasts the
``R`` scalars of ``A`` and issues ``R·J`` ``llvm.fma.v16f32``. At the end ``C = acc`` or
``C += acc`` (``accumulate``), masked to ``rows × cols``. Only the ``⌈cols / 16⌉`` live vectors
are computed (a switch to one loop per count), and the loop and the store come twice: plain
loads and stores where every row is live and every vector whole, masked ones otherwise (the
masks cost ~15 % of a 3×3 16 → 16 layer's forward).

:func:`make_segment_tile` reads its columns as segments instead: image rows of ``width ≤ 16``
pixels at a row pitch of ``B`` and of ``C`` (an output row per segment; rows of up to 8 pixels
two to a vector, joined by one shuffle), so maps of 8–16 pixels a row fill whole vectors.

Fidelity: ``llvm.fma`` is a true fused multiply-add (one rounding), never the compiler's choice
between ``fma`` and ``mul`` + ``add`` (``fmuladd``). Each output element is therefore ONE
sequential float32 chain ``acc ← fma(A[k, r], B[k, j], acc)`` over ``k = 0, 1, …, K − 1`` from
``acc = 0``, then added to ``C`` once with ``accumulate``: its bits depend on the operands and
the order of ``k`` only, never on the tiling, the thread count or how images are batched.
darknet's own ``gemm_nn`` is a plain sequential loop over ``k`` too (``C += A·B`` with a
separate rounding of the product): the two agree up to float32 rounding of each product.

The tile is sized for AVX-512's 32 vector registers: the kernels are used only where the JIT's
target has FMA and AVX-512F (:data:`AVAILABLE`, checked at import by :func:`jit_target_has`,
as ``precision.F16C`` is); elsewhere the convolutions keep their OpenBLAS paths.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: floats per vector register (AVX-512)
LANES = 16


def jit_target_has(*features: str) -> bool:
    """Whether the JIT's target has every CPU feature named (LLVM names: ``fma``, ``avx512f``,
    ``f16c``): an explicit ``NUMBA_CPU_FEATURES`` decides; a ``NUMBA_CPU_NAME`` without
    features counts as lacking them; else the host's, on x86-64 only."""
    from numba.core import config

    if config.CPU_FEATURES is not None:
        wanted = config.CPU_FEATURES.split(",")
        return all(f"+{feature}" in wanted for feature in features)
    if config.CPU_NAME is not None:
        return False
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    return llvm.get_default_triple().startswith("x86_64") and all(
        bool(host.get(feature, False)) for feature in features
    )


#: the micro-kernel may run: the JIT's target has FMA and 32 vector registers of 16 floats
AVAILABLE = jit_target_has("fma", "avx512f")

_F32 = ir.FloatType()
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)


def _declare(module, name, return_type, arguments):
    return cgutils.get_or_insert_function(module, ir.FunctionType(return_type, arguments), name)


def _splat(builder, scalar, lanes=LANES):
    """``<lanes x T>`` with every lane ``scalar`` (a float, an i1 or an i64)."""
    vector = ir.VectorType(scalar.type, lanes)
    zeros = ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(first, ir.Constant(vector, ir.Undefined), zeros)


def _float_pointer(builder, base, offset):
    """``(float*) base + offset`` (``base`` an intp address, ``offset`` in floats)."""
    pointer = builder.inttoptr(base, _F32.as_pointer())
    return builder.gep(pointer, [offset])


def _vector_type(lanes):
    return ir.VectorType(_F32, lanes)


def _masked_load_lanes(builder, pointer, mask, lanes):
    """A masked load of ``lanes`` floats from ``pointer`` (a ``float*``), 0 in the lanes off."""
    vector = _vector_type(lanes)
    name = f"llvm.masked.load.v{lanes}f32.p0"
    mask_type = ir.VectorType(_I1, lanes)
    function = _declare(
        builder.module, name, vector, [vector.as_pointer(), _I32, mask_type, vector]
    )
    address = builder.bitcast(pointer, vector.as_pointer())
    return builder.call(function, [address, ir.Constant(_I32, 4), mask, ir.Constant(vector, None)])


def _masked_store_lanes(builder, value, pointer, mask, lanes):
    vector = _vector_type(lanes)
    name = f"llvm.masked.store.v{lanes}f32.p0"
    mask_type = ir.VectorType(_I1, lanes)
    function = _declare(
        builder.module, name, ir.VoidType(), [vector, vector.as_pointer(), _I32, mask_type]
    )
    address = builder.bitcast(pointer, vector.as_pointer())
    builder.call(function, [value, address, ir.Constant(_I32, 4), mask])


def _segment_mask(builder, cols, width, segment, lanes):
    """``<lanes x i1>``: lane ``i`` of segment ``segment`` is on where
    ``i < min(width, cols − segment·width)``."""
    start = builder.mul(width, ir.Constant(_I64, segment))
    live = builder.sub(cols, start)
    live = builder.select(builder.icmp_signed("<", width, live), width, live)
    lane_numbers = ir.Constant(ir.VectorType(_I64, lanes), list(range(lanes)))
    return builder.icmp_signed("<", lane_numbers, _splat(builder, live, lanes))


def _tile_codegen(rows_r: int, vectors_j: int, halves: int, segmented: bool):
    """The IR of :func:`make_tile` (``segmented`` False: segments of 16 contiguous floats) or
    :func:`make_segment_tile` for ``R = rows_r``, ``J = vectors_j``, ``H = halves`` segments per
    vector: a switch on the live vectors (at most ``J``) to one loop per count, so that a tile
    with fewer live columns issues no fused multiply-adds for its dead vectors."""

    def codegen(context, builder, signature, args):
        if segmented:
            a, b, offsets, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch = args
        else:
            a, b, offsets, depth, c, ldc, rows, cols, accumulate = args
            width = b_pitch = c_pitch = ir.Constant(_I64, LANES)
        operands = (a, b, offsets, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch)
        exit_block = builder.append_basic_block("tile.exit")
        # live segments ⌈cols / width⌉, live vectors ⌈segments / H⌉
        segments = builder.sdiv(builder.add(cols, builder.sub(width, ir.Constant(_I64, 1))), width)
        last = ir.Constant(_I64, halves - 1)
        live = builder.sdiv(builder.add(segments, last), ir.Constant(_I64, halves))
        switch = builder.switch(live, exit_block)
        for count in range(1, vectors_j + 1):
            body = builder.append_basic_block(f"tile.j{count}")
            switch.add_case(ir.Constant(_I64, count), body)
            builder.position_at_end(body)
            _tile_body(builder, rows_r, count, halves, operands)
            builder.branch(exit_block)
        builder.position_at_end(exit_block)
        return context.get_dummy_value()

    return codegen


def _loop_head(builder, before, count):
    """At the top of a loop block entered from ``before``: the counter's phi (0 on entry) and
    ``count`` accumulator phis of ``<16 x float>`` (zero on entry); the caller adds the
    back-edge values."""
    counter = builder.phi(_I64)
    counter.add_incoming(ir.Constant(_I64, 0), before)
    acc = [builder.phi(_VEC) for _ in range(count)]
    for phi in acc:
        phi.add_incoming(ir.Constant(_VEC, None), before)
    return counter, acc


def _k_loop(builder, loop, before, masks, rows_r, vectors_j, halves, a, b, offsets, depth,
            b_shift):  # fmt: skip
    """The k-loop in block ``loop`` (entered from ``before``): ``acc[r, j] = fma(A[k, r],
    B[k, j], acc[r, j])`` for ``k < depth``, the segments of ``B`` loaded plainly (``masks``
    None) or masked. Returns ``(updated accumulators, the loop's last block)``."""
    lanes = LANES // halves
    count = vectors_j * halves
    fma = _declare(builder.module, "llvm.fma.v16f32", _VEC, [_VEC, _VEC, _VEC])
    builder.position_at_end(loop)
    k, acc = _loop_head(builder, before, rows_r * vectors_j)
    offset_table = builder.inttoptr(offsets, _I64.as_pointer())
    a_floats = builder.inttoptr(a, _F32.as_pointer())
    row = _float_pointer(builder, b, builder.load(builder.gep(offset_table, [k])))
    segment = []
    for i in range(count):
        pointer = builder.gep(row, [b_shift[i]])
        if masks is None:
            vector = _vector_type(lanes)
            address = builder.bitcast(pointer, vector.as_pointer())
            segment.append(builder.load(address, align=4))
        else:
            segment.append(_masked_load_lanes(builder, pointer, masks[i], lanes))
    if halves == 1:
        bvec = segment
    else:  # two 8-float segments side by side in one vector
        both = ir.Constant(ir.VectorType(_I32, LANES), list(range(LANES)))
        bvec = [
            builder.shuffle_vector(segment[2 * j], segment[2 * j + 1], both)
            for j in range(vectors_j)
        ]
    a_row = builder.gep(a_floats, [builder.mul(k, ir.Constant(_I64, rows_r))])
    updated = []
    for r in range(rows_r):
        scalar = builder.load(builder.gep(a_row, [ir.Constant(_I64, r)]))
        broadcast = _splat(builder, scalar)
        for j in range(vectors_j):
            updated.append(builder.call(fma, [broadcast, bvec[j], acc[r * vectors_j + j]]))
    k_next = builder.add(k, ir.Constant(_I64, 1))
    for phi, value in zip(acc, updated, strict=True):
        phi.add_incoming(value, builder.block)
    k.add_incoming(k_next, builder.block)
    after = builder.append_basic_block("tile.k.end")
    builder.cbranch(builder.icmp_signed("<", k_next, depth), loop, after)
    return updated, after


def _tile_body(builder, rows_r, vectors_j, halves, operands):
    """One k-loop and store of ``R × J`` accumulators (``J`` live vectors of ``H`` segments).
    The k-loop comes twice: with plain loads where every segment is whole (no lane masked off:
    the masked loads cost ~15 % of a 3×3 16 → 16 layer's forward), else with masked loads."""
    a, b, offsets, depth, c, ldc, rows, cols, accumulate, width, b_pitch, c_pitch = operands
    lanes = LANES // halves
    count = vectors_j * halves
    masks = [_segment_mask(builder, cols, width, i, lanes) for i in range(count)]
    b_shift = [builder.mul(b_pitch, ir.Constant(_I64, i)) for i in range(count)]
    zero = ir.Constant(_VEC, None)
    full_width = builder.icmp_signed("==", width, ir.Constant(_I64, lanes))
    full_cols = builder.icmp_signed(">=", cols, ir.Constant(_I64, count * lanes))
    segments_whole = builder.and_(full_width, full_cols)  # no lane of any segment masked off
    entry = builder.block
    choose = builder.append_basic_block("tile.choose")
    whole = builder.append_basic_block("tile.k.whole")
    partial = builder.append_basic_block("tile.k.masked")
    done = builder.append_basic_block("tile.store")
    builder.cbranch(builder.icmp_signed(">", depth, ir.Constant(_I64, 0)), choose, done)
    builder.position_at_end(choose)
    builder.cbranch(segments_whole, whole, partial)
    loop_args = (rows_r, vectors_j, halves, a, b, offsets, depth, b_shift)
    ends = [
        _k_loop(builder, whole, choose, None, *loop_args),
        _k_loop(builder, partial, choose, masks, *loop_args),
    ]
    for _, block in ends:
        builder.position_at_end(block)
        builder.branch(done)

    builder.position_at_end(done)
    final = [builder.phi(_VEC) for _ in range(rows_r * vectors_j)]
    for i, phi in enumerate(final):
        phi.add_incoming(zero, entry)
        for values, block in ends:
            phi.add_incoming(values[i], block)
    add = builder.icmp_signed("!=", accumulate, ir.Constant(accumulate.type, 0))
    c_shift = [builder.mul(c_pitch, ir.Constant(_I64, i)) for i in range(count)]
    whole_rows = builder.icmp_signed("==", rows, ir.Constant(_I64, rows_r))
    store_whole = builder.append_basic_block("tile.store.whole")
    store_masked = builder.append_basic_block("tile.store.masked")
    stored = builder.append_basic_block("tile.stored")
    builder.cbranch(builder.and_(whole_rows, segments_whole), store_whole, store_masked)
    store = (rows_r, vectors_j, halves, final, c, ldc, c_shift, add)
    for block, masked in ((store_whole, None), (store_masked, masks)):
        builder.position_at_end(block)
        _store_tile(builder, *store, rows, masked)
        builder.branch(stored)
    builder.position_at_end(stored)


def _store_tile(builder, rows_r, vectors_j, halves, final, c, ldc, c_shift, add, rows, masks):
    """``C = acc`` or (``add``) ``C += acc`` for the tile's segments: plain loads and stores
    (``masks`` None: every row live and every segment whole), else masked to the live rows
    and lanes."""
    lanes = LANES // halves
    count = vectors_j * halves
    for r in range(rows_r):
        live = builder.icmp_signed("<", ir.Constant(_I64, r), rows)
        c_row = _float_pointer(builder, c, builder.mul(ldc, ir.Constant(_I64, r)))
        for i in range(count):
            pointer = builder.gep(c_row, [c_shift[i]])
            value = final[r * vectors_j + i // halves]
            if halves > 1:
                half = list(range((i % halves) * lanes, (i % halves + 1) * lanes))
                value = builder.shuffle_vector(
                    value,
                    ir.Constant(_VEC, ir.Undefined),
                    ir.Constant(ir.VectorType(_I32, lanes), half),
                )
            if masks is None:
                address = builder.bitcast(pointer, _vector_type(lanes).as_pointer())
                old = builder.load(address, align=4)
                builder.store(builder.select(add, builder.fadd(old, value), value), address, 4)
                continue
            mask = builder.and_(masks[i], _splat(builder, live, lanes))
            old_mask = builder.and_(mask, _splat(builder, add, lanes))
            old = _masked_load_lanes(builder, pointer, old_mask, lanes)
            value = builder.select(add, builder.fadd(old, value), value)
            _masked_store_lanes(builder, value, pointer, mask, lanes)


def make_tile(rows_r: int, vectors_j: int):
    """The tile kernel ``tile(a, b, offsets, depth, c, ldc, rows, cols, accumulate)`` for
    ``R = rows_r`` rows and ``J = vectors_j`` vectors of :data:`LANES` floats (module
    docstring): ``a``, ``b``, ``offsets`` (int64) and ``c`` are addresses (``array.ctypes.data``
    plus a byte offset), ``depth = K``, ``ldc`` the row stride of ``C`` in floats, ``rows ≤ R``
    and ``cols ≤ 16·J`` the live part of the tile, ``accumulate`` true: ``C += acc``, else
    ``C = acc``. With ``C = acc`` a stored element is ``0 + acc``: ``−0`` sums become ``+0``.
    Only the ``⌈cols / 16⌉`` live vectors are computed."""

    @intrinsic
    def tile(typingctx, a, b, offsets, depth, c, ldc, rows, cols, accumulate):
        integers = (a, b, offsets, depth, c, ldc, rows, cols)
        if any(not isinstance(t, types.Integer) for t in integers) or accumulate != types.boolean:
            return None
        signature = types.void(*[types.int64] * 8, types.boolean)
        return signature, _tile_codegen(rows_r, vectors_j, 1, False)

    return tile


def make_segment_tile(rows_r: int, vectors_j: int, halves: int):
    """The tile over image rows: ``tile(a, b, offsets, depth, c, ldc, rows, cols, accumulate,
    width, b_pitch, c_pitch)`` computes, as :func:`make_tile`,

        ``C[r, i·c_pitch + x] (+)= Σ_k A[k, r] · B[off[k] + i·b_pitch + x]``

    for the segments ``i < ⌈cols / width⌉`` of ``width ≤ 16 / H`` columns ``x`` each (the last
    one ``cols − i·width``): ``H = halves`` segments share one vector of 16 floats (two
    8-pixel rows: an 8×8 map fills whole vectors), ``J = vectors_j`` vectors per tile. With
    ``b_pitch``/``c_pitch`` the row strides of a padded input and of the output, each segment
    is one output row, so rows narrower than 16 pixels still run on whole (or ``H``-shared)
    vectors. Each element is the same single FMA chain over ``k`` as :func:`make_tile`'s."""

    if halves not in (1, 2):
        raise ValueError("make_segment_tile: 1 or 2 segments per vector")

    @intrinsic
    def tile(typingctx, a, b, offsets, depth, c, ldc, rows, cols, accumulate, width, b_pitch,
             c_pitch):  # fmt: skip
        integers = (a, b, offsets, depth, c, ldc, rows, cols, width, b_pitch, c_pitch)
        if any(not isinstance(t, types.Integer) for t in integers) or accumulate != types.boolean:
            return None
        signature = types.void(*[types.int64] * 8, types.boolean, *[types.int64] * 3)
        return signature, _tile_codegen(rows_r, vectors_j, halves, True)

    return tile


def pack_rows(a: np.ndarray, rows_r: int) -> np.ndarray:
    """``packed[t, k, r] = a[t·R + r, k]`` (0 past the last row): each tile's ``R`` rows of the
    left operand side by side, so one step of the tile reads ``R`` consecutive floats."""
    m, depth = a.shape
    tiles = -(-m // rows_r)
    packed = np.zeros((tiles * rows_r, depth), dtype=np.float32)
    packed[:m] = a
    return np.ascontiguousarray(packed.reshape(tiles, rows_r, depth).transpose(0, 2, 1))


# --------------------------------------------------------------------------------------------
# Dot-product tile: the pixels in the vector lanes (weight gradients of few input channels)
# --------------------------------------------------------------------------------------------


def _lane_sum(builder, vector):
    """The 16 lanes of ``vector`` added in a fixed tree: lanes ``i`` and ``i + 8``, then
    ``i`` and ``i + 4``, ``i`` and ``i + 2``, lane 0 and lane 1 (float32 adds; the same order on
    every call, so the bits never depend on the tiling or the threads)."""
    value, lanes = vector, LANES
    while lanes > 2:
        half = lanes // 2
        undefined = ir.Constant(_vector_type(lanes), ir.Undefined)
        low = ir.Constant(ir.VectorType(_I32, half), list(range(half)))
        high = ir.Constant(ir.VectorType(_I32, half), list(range(half, lanes)))
        value = builder.fadd(
            builder.shuffle_vector(value, undefined, low),
            builder.shuffle_vector(value, undefined, high),
        )
        lanes = half
    first = builder.extract_element(value, ir.Constant(_I32, 0))
    second = builder.extract_element(value, ir.Constant(_I32, 1))
    return builder.fadd(first, second)


def _dot_body(builder, rows_r, taps_t, operands):
    """The v-loop and the stores of :func:`make_dot_tile` for ``taps_t`` live taps."""
    a, lda, b, offsets, vectors, c, ldc, rows, accumulate = operands
    fma = _declare(builder.module, "llvm.fma.v16f32", _VEC, [_VEC, _VEC, _VEC])
    offset_table = builder.inttoptr(offsets, _I64.as_pointer())
    tap_starts = [
        _float_pointer(builder, b, builder.load(builder.gep(offset_table, [ir.Constant(_I64, t)])))
        for t in range(taps_t)
    ]
    row_starts = [
        _float_pointer(builder, a, builder.mul(lda, ir.Constant(_I64, r))) for r in range(rows_r)
    ]
    before = builder.block
    loop = builder.append_basic_block("dot.v")
    after = builder.append_basic_block("dot.v.end")
    builder.branch(loop)
    builder.position_at_end(loop)
    v, acc = _loop_head(builder, before, rows_r * taps_t)
    first = builder.mul(v, ir.Constant(_I64, LANES))

    def load(start):
        address = builder.bitcast(builder.gep(start, [first]), _VEC.as_pointer())
        return builder.load(address, align=4)

    a_vectors = [load(start) for start in row_starts]
    b_vectors = [load(start) for start in tap_starts]
    updated = [
        builder.call(fma, [a_vectors[r], b_vectors[t], acc[r * taps_t + t]])
        for r in range(rows_r)
        for t in range(taps_t)
    ]
    v_next = builder.add(v, ir.Constant(_I64, 1))
    for phi, value in zip(acc, updated, strict=True):
        phi.add_incoming(value, builder.block)
    v.add_incoming(v_next, builder.block)
    builder.cbranch(builder.icmp_signed("<", v_next, vectors), loop, after)
    builder.position_at_end(after)
    add = builder.icmp_signed("!=", accumulate, ir.Constant(accumulate.type, 0))
    for r in range(rows_r):
        live = builder.icmp_signed("<", ir.Constant(_I64, r), rows)
        with builder.if_then(live):
            c_row = _float_pointer(builder, c, builder.mul(ldc, ir.Constant(_I64, r)))
            for t in range(taps_t):
                total = _lane_sum(builder, updated[r * taps_t + t])
                pointer = builder.gep(c_row, [ir.Constant(_I64, t)])
                old = builder.load(pointer, align=4)
                builder.store(builder.select(add, builder.fadd(old, total), total), pointer, 4)


def _dot_codegen(rows_r: int, taps_t: int):
    """The IR of :func:`make_dot_tile`: a switch on the live taps (1 … ``T``) to one loop per
    count, so that a short last group of taps issues no dead fused multiply-adds."""

    def codegen(context, builder, signature, args):
        a, lda, b, offsets, vectors, c, ldc, rows, taps, accumulate = args
        operands = (a, lda, b, offsets, vectors, c, ldc, rows, accumulate)
        exit_block = builder.append_basic_block("dot.exit")
        start = builder.append_basic_block("dot.start")
        builder.cbranch(builder.icmp_signed(">", vectors, ir.Constant(_I64, 0)), start, exit_block)
        builder.position_at_end(start)
        switch = builder.switch(taps, exit_block)
        for count in range(1, taps_t + 1):
            body = builder.append_basic_block(f"dot.t{count}")
            switch.add_case(ir.Constant(_I64, count), body)
            builder.position_at_end(body)
            _dot_body(builder, rows_r, count, operands)
            builder.branch(exit_block)
        builder.position_at_end(exit_block)
        return context.get_dummy_value()

    return codegen


def make_dot_tile(rows_r: int, taps_t: int):
    """The tile ``dot(a, lda, b, offsets, vectors, c, ldc, rows, taps, accumulate)`` computing

        ``C[r, t] (+)= Σ_{v < vectors} Σ_{l < 16} A[r·lda + 16·v + l] · B[off[t] + 16·v + l]``

    for ``r < rows ≤ R = rows_r`` and ``t < taps ≤ T = taps_t``: ``R`` rows of ``A`` (each
    ``16·vectors`` floats) against ``T`` shifted windows of ``B`` (``off``: int64 float offsets,
    ``taps`` of them read). The summed dimension runs in the vector lanes: each lane ``l`` is
    one FMA chain over ``v`` from 0, then the 16 lane sums are added in a fixed tree
    (:func:`_lane_sum`) and stored (``C = sum``) or added (``accumulate``: ``C += sum``).
    ``A`` rows past ``rows`` are read (keep them in bounds: zero rows) but never stored.
    Addresses are integers (``array.ctypes.data`` plus a byte offset); ``lda``/``ldc`` in
    floats."""

    @intrinsic
    def dot(typingctx, a, lda, b, offsets, vectors, c, ldc, rows, taps, accumulate):
        integers = (a, lda, b, offsets, vectors, c, ldc, rows, taps)
        if any(not isinstance(t, types.Integer) for t in integers) or accumulate != types.boolean:
            return None
        signature = types.void(*[types.int64] * 9, types.boolean)
        return signature, _dot_codegen(rows_r, taps_t)

    return dot
