"""The one Backend interface that layers call (CPU now, CUDA later, same method names).

Every method takes device arrays (float32 unless said otherwise) and scalars, writes into the
preallocated outputs it is given and returns nothing (losses and accuracies are returned as
Python floats). Layers never import Numba or branch on the device: they call these methods.

Shapes use ``B`` images, ``C`` channels, ``N`` spatial positions (``H·W``; 1 for flat layers),
so per-channel kernels see ``(B, C, N)`` views. ``alpha`` on gradient accumulators is ±1 and
selects the sign convention the network stores (``Network.grad_sign``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any  # a device array: numpy.ndarray on the CPU


@dataclass(frozen=True)
class DarknetBNState:
    """Views a darknet in-layer batch norm works on (``C`` channels, ``x``/``x_norm`` shaped
    like the layer output ``(B, C, N)``).

    Parameters (in the flat buffers): ``scales``, ``biases`` (the BN shift), ``rolling_mean``,
    ``rolling_variance``; gradients: ``scale_updates``, ``bias_updates``. Per-pass scratch:
    ``mean``, ``variance``, ``mean_delta``, ``variance_delta`` (``C``), ``x`` (the pre-BN
    output), ``x_norm``.
    """

    scales: Array
    biases: Array
    rolling_mean: Array
    rolling_variance: Array
    scale_updates: Array
    bias_updates: Array
    mean: Array
    variance: Array
    mean_delta: Array
    variance_delta: Array
    x: Array
    x_norm: Array


@dataclass(frozen=True)
class CaffeBNState:
    """Views a Caffe ``BatchNorm`` works on: the running sums ``mean_sum``, ``variance_sum``
    and the one-element ``scale_factor`` (blobs 0–2), per-pass ``mean`` and ``std``
    (``sqrt(var + eps)``, ``C``), plus the layer's ``moving_average_fraction`` and ``eps``."""

    mean_sum: Array
    variance_sum: Array
    scale_factor: Array
    mean: Array
    std: Array
    moving_average_fraction: float
    eps: float


class BackendError(RuntimeError):
    """A backend cannot run the requested operation (missing kernel, unknown activation)."""


class Backend:
    """Abstract backend; see the module docstring for conventions. ``name`` is ``"cpu"``…"""

    name = "abstract"
    #: whether ``maxpool_backward(..., assign=True)`` overwrites ``dx`` (``Layer.assign_dx``)
    maxpool_assigns_dx = False
    #: whether a darknet layer with batch norm computes its training output straight into the
    #: norm's ``x`` (:meth:`darknet_bn_act_forward_from_x`) instead of its own output
    darknet_bn_reads_x = False

    def configure(self, work: int) -> None:
        """Called at the start of every forward and backward pass with the largest activation
        size (floats) of the network; a backend may size its thread pool from it."""

    # ---- memory ---------------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype=np.float32) -> Array:
        """A new uninitialised device array."""
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...], dtype=np.float32) -> Array:
        """A new zero-filled device array."""
        raise NotImplementedError

    def to_host(self, array: Array) -> np.ndarray:
        """A host (NumPy) copy of ``array``."""
        raise NotImplementedError

    def copy_from_host(self, host: np.ndarray, out: Array) -> None:
        """``out[...] = host`` (cast to ``out``'s dtype)."""
        raise NotImplementedError

    def fill(self, out: Array, value: float) -> None:
        """``out[...] = value``."""
        raise NotImplementedError

    def copy(self, src: Array, out: Array) -> None:
        """``out[...] = src``."""
        raise NotImplementedError

    def permute_copy(self, src: Array, out: Array, axes: tuple[int, ...]) -> None:
        """``out[...] = src.transpose(axes)`` (``out`` contiguous)."""
        raise NotImplementedError

    # ---- dense algebra --------------------------------------------------------------------
    def matmul(self, a: Array, b: Array, out: Array) -> None:
        """``out = a @ b`` (broadcast over stacked leading axes)."""
        raise NotImplementedError

    def matmul_add(self, a: Array, b: Array, out: Array, scratch: Array, alpha: float) -> None:
        """``out += alpha·(a @ b)``; ``scratch`` has ``out``'s shape."""
        raise NotImplementedError

    def sum_leading_add(self, stack: Array, out: Array, scratch: Array, alpha: float) -> None:
        """``out += alpha·Σ_i stack[i]``; ``scratch`` has ``out``'s shape."""
        raise NotImplementedError

    def accumulate(self, out: Array, value: Array, alpha: float) -> None:
        """``out += alpha·value``."""
        raise NotImplementedError

    def scale(self, out: Array, factor: float) -> None:
        """``out *= factor``."""
        raise NotImplementedError

    # ---- convolution ----------------------------------------------------------------------
    def conv_image_chunks(self, batch: int, chunk_floats: int) -> int:
        """How many chunks of consecutive images the per-image convolution
        (:meth:`conv_forward_images`) splits a batch into, given the scratch floats one chunk
        needs; 0 where the backend has none (layers then unfold the whole batch and call
        :meth:`matmul`). The count must depend on the shapes only, never on the thread count:
        it fixes the summation order of the weight gradient."""
        return 0

    def conv_col_floats(self, x_shape, weights_shape, kernel, stride, pad, dilation, out_hw):
        """Floats of one chunk's ``col`` scratch for :meth:`conv_forward_images`/
        :meth:`conv_backward_images`: ``K·N`` (one image's im2col), or more where the backend
        has other per-image strategies (the CPU's per-tap forward)."""
        k = weights_shape[2]
        return k * out_hw[0] * out_hw[1]

    def conv_forward_images(
        self, x, weights, out, col, kernel, stride, pad, dilation, out_hw, bias=None,
        activation=None,
    ) -> None:  # fmt: skip
        """``out (B,G·m,N)``: ``W_g · im2col(x_b)_g`` image by image, then (given) ``+ bias``
        and the darknet ``activation`` (code) on each image; ``col (P,K,N)`` scratch
        (``engine.backends.cpu.conv_images``)."""
        raise NotImplementedError

    def conv_backward_images(
        self, x, weights, delta, dweights, dx, col, dcol, partial, alpha,
        kernel, stride, pad, dilation, out_hw, output=None, activation=None, dbias=None,
        bias_partial=None, assign_dx=False,
    ) -> None:  # fmt: skip
        """First (given) ``delta ← delta·g(output)`` and ``dbias += alpha·Σ delta`` per image;
        then ``dweights += alpha·Σ_b delta_b·im2col(x_b)ᵀ``; ``dx += col2im(Wᵀ·delta_b)``
        unless ``dx`` is None (``dx = …`` with ``assign_dx``); ``col``/``dcol (P,K,N)``,
        ``partial (P,G,K,m)`` and ``bias_partial (P,F)`` scratch."""
        raise NotImplementedError

    def im2col(self, x, col, kernel, stride, pad, dilation, out_hw) -> None:
        """``x (B,C,H,W)`` → ``col (G,K,B·N)``, zero padding (``engine.backends.cpu.conv``)."""
        raise NotImplementedError

    def col2im_add(self, col, dx, kernel, stride, pad, dilation, out_hw) -> None:
        """``dx (B,C,H,W) +=`` fold of ``col (G,K,B·N)``."""
        raise NotImplementedError

    def flat_as_col(self, x, col) -> None:
        """darknet's 1×1 shortcut: the input memory read as ``(K, N)`` per image and group."""
        raise NotImplementedError

    def flat_as_col_add(self, col, dx) -> None:
        """Transpose of :meth:`flat_as_col`, adding into ``dx``."""
        raise NotImplementedError

    def bias_add(self, y, bias) -> None:
        """``y (B,C,N) += bias[c]``."""
        raise NotImplementedError

    def bias_grad(self, delta, grad, alpha: float) -> None:
        """``grad[c] += alpha·Σ_{b,j} delta[b,c,j]``."""
        raise NotImplementedError

    def darknet_tail_forward(self, y, bias, code) -> None:
        """darknet's layer tail without batch norm, ``y (B,C,N) ← act(y + bias[c])``
        (``add_bias`` then ``activate_array``); ``bias`` None: none, ``code`` None: linear."""
        if bias is not None:
            self.bias_add(y, bias)
        if code is not None:
            self.activate(y, code)

    def darknet_tail_backward(self, y, delta, dbias, code, alpha: float) -> None:
        """``delta ← delta·g(y)`` (``gradient_array``, from the output) then
        ``dbias[c] += alpha·Σ delta[:, c]`` (``backward_bias``); None skips either."""
        if code is not None:
            self.activation_gradient(y, code, delta)
        if dbias is not None:
            self.bias_grad(delta, dbias, alpha)

    # ---- graph layers ---------------------------------------------------------------------
    def shortcut(self, add, out, s1: float, s2: float) -> None:
        """darknet ``shortcut_cpu``: ``out[b,k,j·sample,i·sample] = s1·out + s2·add[b,k,
        j·stride,i·stride]`` over the overlap of ``add (B,C1,H1,W1)`` and ``out (B,C2,H2,W2)``,
        ``stride = max(1, W1/W2)``, ``sample = max(1, W2/W1)``."""
        raise NotImplementedError

    def shortcut_forward(self, x, add, out, s1: float, s2: float, code: int | None) -> None:
        """darknet ``forward_shortcut_layer``: ``out = x``, :meth:`shortcut` ``(add → out, s1,
        s2)``, then the activation ``code`` in place (None: linear). Backends may fuse the
        passes where the result stays bit-identical."""
        self.copy(x, out)
        self.shortcut(add, out, s1, s2)
        if code is not None:
            self.activate(out, code)

    def shortcut_backward(
        self,
        out,
        delta,
        dx,
        da,
        alpha: float,
        beta: float,
        code: int | None,
        assign_dx: bool = False,
        assign_da: bool = False,
    ) -> None:
        """darknet ``backward_shortcut_layer``: ``delta ← delta·g(out)`` (``code`` None:
        linear), ``dx += alpha·delta`` over the whole output, then :meth:`shortcut` ``(delta →
        da, 1, beta)``; None skips ``dx`` or ``da``. ``assign_dx``/``assign_da``: that delta
        was not zeroed in forward (this layer writes it first, ``Layer.assign_dx``); the
        result must be the bits of adding into zeros (here: zeroed, then added). Backends may
        fuse the passes where the result stays bit-identical."""
        if code is not None:
            self.activation_gradient(out, code, delta)
        if dx is not None:
            if assign_dx:
                self.fill(dx, 0.0)
            self.accumulate(dx, delta, alpha)
        if da is not None:
            if assign_da:
                self.fill(da, 0.0)
            self.shortcut(delta, da, 1.0, beta)

    def route_copy(self, src, out, offset: int, group: int = 0, groups: int = 1) -> None:
        """``out[b, offset:offset+n] = src[b, group·n:(group+1)·n]`` (per-image flat views;
        ``n`` = src's per-image count / ``groups``: AlexeyAB's route ``group_id``/``groups``)."""
        raise NotImplementedError

    def route_add(self, delta, dx, offset: int, group: int = 0, groups: int = 1) -> None:
        """``dx[b, group·n:(group+1)·n] += delta[b, offset:offset+n]`` (per-image flat views;
        ``n`` = dx's per-image count / ``groups``)."""
        raise NotImplementedError

    # ---- reorg and crop -------------------------------------------------------------------
    def reorg(self, x, out, w: int, h: int, c: int, stride: int, forward: bool) -> None:
        """darknet ``reorg_cpu(x, w, h, c, batch, stride, forward, out)`` on contiguous arrays
        of ``batch·c·h·w`` values (``engine.backends.cpu.reshape``); assigns every element."""
        raise NotImplementedError

    def crop_forward(
        self, x, out, top: int, left: int, flip: bool, scale: float, trans: float, colour
    ) -> None:
        """darknet ``forward_crop_layer``: ``out[b,k,i,j] = scale·x[b,k,top+i,col] + trans``
        (``col`` mirrored when ``flip``); ``colour`` ``(B, 2)`` recolours 3-channel pixels
        first (saturation, exposure), ``(0, 2)`` for none (``engine.backends.cpu.reshape``)."""
        raise NotImplementedError

    # ---- pooling --------------------------------------------------------------------------
    def maxpool_forward(self, x, y, argmax, kernel, stride, offset) -> None:
        """Max over clipped windows, first maximum wins; ``argmax`` int32 plane index."""
        raise NotImplementedError

    def maxpool_backward(self, dy, argmax, dx) -> None:
        """``dx[argmax] += dy``."""
        raise NotImplementedError

    def avepool_forward(self, x, y, kernel, stride, pad) -> None:
        """Average with Caffe's divisor rule (global pooling: kernel = H×W, pad 0)."""
        raise NotImplementedError

    def avepool_backward(self, dy, dx, kernel, stride, pad) -> None:
        """``dx[window] += dy / pool_size``."""
        raise NotImplementedError

    # ---- element-wise activations (darknet: gradient from the OUTPUT) --------------------
    def activation_code(self, activation: str) -> int:
        """The backend's code for a darknet activation name (darknet's ``ACTIVATION`` enum);
        an unknown name raises."""
        raise NotImplementedError

    def activate(self, x, code: int) -> None:
        """darknet ``activate_array``: ``x ← f(x)`` in place."""
        raise NotImplementedError

    def activation_gradient(self, y, code: int, delta) -> None:
        """darknet ``gradient_array``: ``delta ← delta·g(y)``, ``y`` the activation output."""
        raise NotImplementedError

    def caffe_activation_forward(self, x, y, activation: str, negative_slope: float) -> None:
        """Caffe ReLU (``relu`` with ``negative_slope``) / Sigmoid (``logistic``) / TanH
        (``tanh``): ``y = f(x)``."""
        raise NotImplementedError

    def caffe_activation_backward(
        self, x, y, dy, dx, activation: str, negative_slope: float
    ) -> None:
        """Caffe activation backward: ``dx = dy·f'`` (ReLU from ``x``, Sigmoid/TanH from
        ``y``), overwriting ``dx``."""
        raise NotImplementedError

    # ---- batch norm / scale ---------------------------------------------------------------
    def darknet_bn_forward(self, x, state, train: bool) -> None:
        """darknet in-layer batch norm on ``x (B,C,N)`` in place (``state``: a
        :class:`DarknetBNState` of views); train: batch statistics, unbiased variance,
        rolling ``.99/.01``; inference: rolling statistics."""
        raise NotImplementedError

    def darknet_bn_backward(self, delta, state, alpha: float) -> None:
        """darknet batch-norm backward on ``delta (B,C,N)`` in place, accumulating bias and
        scale updates (times ``alpha``)."""
        raise NotImplementedError

    def darknet_bn_act_forward(self, x, state, train: bool, code) -> None:
        """darknet batch norm (:meth:`darknet_bn_forward`) then ``activate_array`` with
        ``code`` (None: linear) on ``x (B,C,N)`` in place; a backend may fuse the two."""
        self.darknet_bn_forward(x, state, train)
        if code is not None:
            self.activate(x, code)

    def darknet_bn_act_forward_from_x(self, out, state, code) -> None:
        """The training :meth:`darknet_bn_act_forward` of a layer that computed its pre-BN
        output into ``state.x`` (darknet's copy of it) instead of ``out (B,C,N)``: ``out``
        receives the normalised, activated values, ``state.x`` keeps its own. The same values
        as copying ``state.x`` into ``out`` and running the pass in place (this default); a
        backend may skip the copy (:attr:`darknet_bn_reads_x`)."""
        self.copy(state.x, out)
        self.darknet_bn_act_forward(out, state, True, code)

    #: whether :meth:`darknet_bn_act_shortcut_forward` runs the ``[shortcut]`` inside the batch
    #: norm's pass (the network then hands a layer's shortcut to it; else the two run apart)
    BN_CARRIES_SHORTCUT = False

    def darknet_bn_act_shortcut_forward(
        self, out, state, code, add, total, alpha: float, beta: float, total_code
    ) -> None:
        """:meth:`darknet_bn_act_forward_from_x` into ``out``, then the darknet ``[shortcut]``
        whose chain input is ``out`` (:meth:`shortcut_forward`: ``total = alpha·out +
        beta·add``, activated with ``total_code``; ``add`` and ``total`` of ``out``'s size).
        This default runs the two; a backend may fuse them where the bits stay the same
        (:attr:`BN_CARRIES_SHORTCUT`)."""
        self.darknet_bn_act_forward_from_x(out, state, code)
        self.shortcut_forward(out, add, total, alpha, beta, total_code)

    def darknet_bn_act_backward(self, y, delta, state, alpha: float, code) -> None:
        """``delta ← delta·g(y)`` (``gradient_array`` from the output ``y``; ``code`` None:
        linear) then :meth:`darknet_bn_backward`; a backend may fuse the two."""
        if code is not None:
            self.activation_gradient(y, code, delta)
        self.darknet_bn_backward(delta, state, alpha)

    def caffe_bn_forward(self, x, y, state, use_global_stats: bool) -> None:
        """Caffe ``BatchNorm`` forward (no affine part)."""
        raise NotImplementedError

    def caffe_bn_backward(self, y, dy, dx, state, use_global_stats: bool) -> None:
        """Caffe ``BatchNorm`` backward from the normalised output ``y``, overwriting ``dx``."""
        raise NotImplementedError

    def scale_forward(self, x, y, gamma, beta) -> None:
        """Caffe ``Scale``: ``y = γ[c]·x (+ β[c])`` (``beta`` may be None)."""
        raise NotImplementedError

    def scale_backward(self, x, dy, dx, gamma, dgamma, dbeta, alpha: float) -> None:
        """Caffe ``Scale`` backward: ``dx = γ·dy`` (``dx`` may be None),
        ``dγ += alpha·Σ dy·x``, ``dβ += alpha·Σ dy``."""
        raise NotImplementedError

    # ---- dropout --------------------------------------------------------------------------
    def dropout_forward(self, x, y, uniforms, mask, probability: float, style: str) -> None:
        """Training dropout from ``uniforms`` (one per element): darknet drops where
        ``r < p`` and scales the rest by ``1/(1−p)`` in place (``y`` is ``x``); Caffe keeps
        where ``r > p`` (uint32 ``mask``) and writes ``y = x·mask/(1−p)``."""
        raise NotImplementedError

    def dropout_backward(self, dy, dx, uniforms, mask, probability: float, style: str) -> None:
        """The forward's mask and scale applied to ``dy`` into ``dx`` (darknet: in place)."""
        raise NotImplementedError

    # ---- losses ---------------------------------------------------------------------------
    def darknet_softmax(self, x, y, truth, delta, losses, groups: int, temperature: float) -> float:
        """darknet ``[softmax]`` forward ``(B, inputs)``; with ``truth`` (not None):
        ``delta = t − p``, per-element ``losses`` and the returned cost ``Σ −log p`` over
        nonzero targets; without: 0."""
        raise NotImplementedError

    def darknet_cost(self, x, truth, errors, delta, cost_type: str) -> float:
        """darknet ``[cost]`` forward: per-element ``errors`` and ``delta``; returns the sum."""
        raise NotImplementedError

    def softmax_loss_forward(self, x, labels, prob, normalization: str, ignore_label) -> float:
        """Caffe ``SoftmaxWithLoss`` forward: ``prob`` and the loss (before loss_weight)."""
        raise NotImplementedError

    def softmax_loss_backward(
        self, prob, labels, dx, normalization: str, ignore_label, loss_weight: float
    ) -> None:
        """Caffe ``SoftmaxWithLoss`` backward, adding into ``dx``."""
        raise NotImplementedError

    def accuracy(self, x, labels, top_k: int, ignore_label) -> float:
        """Caffe ``Accuracy``: ties count against."""
        raise NotImplementedError

    # ---- Caffe element-wise and normalisation layers (engine.backends.cpu.caffe_layers) ---
    def multiply(self, a: Array, b: Array, out: Array) -> None:
        """``out = a·b`` element-wise (``out`` may be ``a`` or ``b``)."""
        raise NotImplementedError

    def divide(self, a: Array, b: Array, out: Array) -> None:
        """``out = a/b`` element-wise."""
        raise NotImplementedError

    def eltwise_max(self, x: Array, out: Array, mask: Array, index: int) -> None:
        """Fold bottom ``index`` into Caffe's Eltwise MAX (``mask``: int32 winner index)."""
        raise NotImplementedError

    def eltwise_max_backward(self, delta: Array, mask: Array, index: int, dx: Array) -> None:
        """``dx += delta`` where ``mask == index``."""
        raise NotImplementedError

    def power_forward(self, x, y, power: float, scale: float, shift: float) -> None:
        """Caffe ``Power``: ``y = (shift + scale·x)^power``."""
        raise NotImplementedError

    def power_backward(self, x, y, dy, dx, power: float, scale: float, shift: float) -> None:
        """Caffe ``Power`` backward, adding ``dy·dy/dx`` into ``dx``."""
        raise NotImplementedError

    def lrn_forward(self, x, scale, y, size: int, alpha: float, beta: float, k: float) -> None:
        """Caffe ``LRN`` ACROSS_CHANNELS on ``(B, C, H·W)``; ``scale`` is kept for backward."""
        raise NotImplementedError

    def lrn_backward(self, x, y, scale, dy, dx, size: int, alpha: float, beta: float) -> None:
        """Caffe ``LRN`` ACROSS_CHANNELS backward, adding into ``dx``."""
        raise NotImplementedError

    def caffe_softmax_forward(self, x, y) -> None:
        """Caffe ``Softmax`` over axis 1 of ``(B, C, inner)``."""
        raise NotImplementedError

    def caffe_softmax_backward(self, y, dy, dx) -> None:
        """Caffe ``Softmax`` backward, adding ``(dy − Σ dy·y)·y`` into ``dx``."""
        raise NotImplementedError

    # ---- update and per-segment reductions (segment tables and outputs are host arrays) ---
    #: whether :meth:`fused_update` takes the darknet ``carry`` and ``grad_sq`` (measures the
    #: update's gradient norm and keeps the next snapshot in its own pass)
    FUSED_CARRY = False
    #: whether :meth:`fused_update` takes ``grad_sq`` alone under a Caffe rule (measures the
    #: diff's norm per segment in its own pass, before updating)
    FUSED_GRAD_NORM = False
    #: whether :meth:`fused_update` takes ``clear_grads`` under a Caffe rule (leaves the diffs
    #: 0 instead of the applied step: the next ``ClearParamDiffs`` in the update's own pass)
    FUSED_CLEAR = False

    def fused_update(
        self,
        rule,
        params,
        grads,
        state_a,
        state_b,
        seg_offsets,
        seg_sizes,
        seg_lr,
        seg_decay,
        seg_grad_on,
        coef,
        step_sq,
        weight_sq,
        source=None,
    ) -> None:
        """One update of ``rule`` over every segment of the flat device buffers, in place:
        the contract of ``engine.backends.cpu.update.fused_update`` (rule codes, coefficient
        slots). ``seg_*``, ``coef`` and the float64 outputs ``step_sq``/``weight_sq``
        (``Σ(Δw)²``, ``Σw²`` per segment) are host arrays. ``source`` (a device buffer of
        ``params``' shape, or None for ``params``): the weights the rule reads; the result is
        written to ``params`` (the master copy of simulated mixed precision)."""
        raise NotImplementedError

    def segment_sumsq(self, values, seg_offsets, seg_sizes, seg_on, out) -> None:
        """``out[s] = Σ values²`` over segment ``s`` (float64), 0 where ``seg_on[s] = 0``
        (Caffe's ClipGradients norm); ``out`` and the table are host arrays."""
        raise NotImplementedError

    def segment_sum_squares(self, buffer, offsets, lengths, out) -> None:
        """``out[k] = Σ buffer[offsets[k] : offsets[k] + lengths[k]]²`` in float64 (per-layer
        norms; ``engine.backends.cpu.reduce``); ``out`` and the table are host arrays."""
        raise NotImplementedError

    def segment_sum_squares_change(self, before, after, offsets, lengths, out) -> None:
        """``out[k] = Σ (before − after)²`` over each segment, the difference formed in
        float32 and squared in float64. ``before`` may be overwritten with the difference
        (this default does so, then calls :meth:`segment_sum_squares`)."""
        self.accumulate(before, after, -1.0)
        self.segment_sum_squares(before, offsets, lengths, out)

    def first_nonfinite_segment(self, buffer, offsets, lengths, flags) -> int:
        """Index of the first segment holding a NaN or ±inf, or −1; host int8 ``flags``
        receive 1 for every non-finite segment."""
        raise NotImplementedError

    # ---- simulated storage precision (engine.backends.cpu.precision) ----------------------
    def round_storage(
        self, buffer, offsets, lengths, code: int, counts, flush_nonfinite: bool = False
    ) -> None:
        """Round each segment ``buffer[offsets[s] : offsets[s] + lengths[s]]`` in place to
        storage format ``code`` (``FP32``/``FP16``/``BF16``: round to nearest even, subnormals,
        overflow to ±inf, NaN kept); host int64 ``counts[s] = (non-zero before, of those zero
        after, non-finite after)``. ``flush_nonfinite`` stores 0 for a non-finite result."""
        raise NotImplementedError

    def store_rounded(self, buffer, offsets, lengths, code: int, saved=None) -> None:
        """Round each segment of ``buffer`` in place to format ``code`` counting nothing; with
        ``saved`` (same shape), first copy each segment there (``saved[seg] ← buffer[seg]``:
        the master weights before the working copy is rounded). This default copies, then
        calls :meth:`round_storage`."""
        if saved is not None:
            table = zip(np.asarray(offsets).tolist(), np.asarray(lengths).tolist(), strict=True)
            for offset, length in table:
                self.copy(buffer[offset : offset + length], saved[offset : offset + length])
        counts = np.zeros((len(offsets), 3), np.int64)
        self.round_storage(buffer, offsets, lengths, code, counts)

    def unscale_sum_squares(self, buffer, factor: float, carry, offsets, lengths, out) -> None:
        """``buffer *= float32(factor)`` (every element), then ``out[k] = Σ buffer²`` per
        segment (:meth:`segment_sum_squares`), then ``buffer += carry`` unless ``carry`` is
        None: GradScaler's unscale, the gradient norms and darknet's carried momentum added
        back. This default makes the three passes."""
        if factor != 1.0:
            self.scale(buffer, factor)
        self.segment_sum_squares(buffer, offsets, lengths, out)
        if carry is not None:
            self.accumulate(buffer, carry, 1.0)

    def round_unscale_sum_squares(
        self, buffer, offsets, lengths, code: int, counts, flush_nonfinite: bool, factor: float,
        carry, out,
    ) -> None:  # fmt: skip
        """:meth:`round_storage` over the segments (``counts``, ``flush_nonfinite`` as there),
        then :meth:`unscale_sum_squares` (``factor``, ``carry``, ``out``) with the same table:
        a simulated-precision update's gradients stored rounded, unscaled, their norms taken
        and darknet's carry added back. This default makes the two calls; a backend may fuse
        them into one pass (the CPU's, block by block), with the same results bit for bit."""
        self.round_storage(buffer, offsets, lengths, code, counts, flush_nonfinite)
        self.unscale_sum_squares(buffer, factor, carry, offsets, lengths, out)

    def lost_updates(self, before, after, offsets, lengths, code: int, store: bool, counts) -> None:
        """Per segment, host int64 ``counts[s] = (elements with after ≠ before, of those with
        round(after) = round(before))``; ``store`` rounds ``after`` in place."""
        raise NotImplementedError
