"""Device arrays of the CUDA backend: NumPy-like views over one numba-cuda allocation.

Layers treat backend arrays like NumPy arrays: they ``reshape`` them, slice the flat parameter
buffer, take ``.T`` and ``swapaxes`` views for the GEMMs. numba-cuda's ``DeviceNDArray`` has no
``swapaxes`` and no N-d transpose, so :class:`CudaArray` keeps the view itself: the root
allocation (a 1-D device array), an element ``offset``, a ``shape`` and element ``strides``.
Contiguous views hand kernels a real ``DeviceNDArray`` (:attr:`CudaArray.dev`); strided views
(the transposes) are only read by the GEMM kernel, which takes the strides as arguments.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda


class DeviceArrayError(ValueError):
    """A view the CUDA backend cannot make or a kernel cannot take (non-contiguous, bad key)."""


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    return tuple(reversed(strides))


def _resolve_shape(shape: tuple, size: int) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise DeviceArrayError(f"can only infer one dimension in reshape {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise DeviceArrayError(f"cannot reshape an array of {size} elements to {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if math.prod(shape) != size:
        raise DeviceArrayError(f"cannot reshape an array of {size} elements to {shape}")
    return shape


class CudaArray:
    """A view ``(data, offset, shape, strides)`` of a 1-D numba-cuda allocation ``data``.

    Element ``[i0, i1, …]`` lives at ``data[offset + Σ i_k·strides[k]]`` (strides in elements,
    0 never occurs). Supports what layers and the network use: ``shape``, ``size``, ``ndim``,
    ``dtype``, ``flags.c_contiguous``, ``reshape`` (contiguous views), ``swapaxes``, ``.T``,
    slicing the first axis with step 1, ``view[...] = host_array`` (host → device) and
    ``numpy.asarray(view)`` (device → host copy).
    """

    __slots__ = ("_dev", "data", "dtype", "offset", "shape", "strides")

    def __init__(self, data, offset: int, shape: tuple[int, ...], strides: tuple[int, ...]):
        self.data = data
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.strides = tuple(int(s) for s in strides)
        self.dtype = np.dtype(data.dtype)
        self._dev = None

    @classmethod
    def allocate(cls, shape: tuple[int, ...], dtype, zero: bool) -> CudaArray:
        """A new C-contiguous array (zero-filled when ``zero``)."""
        shape = tuple(int(s) for s in (shape if isinstance(shape, tuple | list) else (shape,)))
        size = math.prod(shape)
        dtype = np.dtype(dtype)
        storage = max(size, 1)  # numba-cuda refuses nothing, but kernels want a real pointer
        if zero:
            data = cuda.to_device(np.zeros(storage, dtype=dtype))
        else:
            data = cuda.device_array(storage, dtype=dtype)
        return cls(data, 0, shape, _c_strides(shape))

    # ---- NumPy-like attributes ------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_contiguous(self) -> bool:
        """Whether the view is C-contiguous (extents of 1 may carry any stride)."""
        expected = _c_strides(self.shape)
        return all(
            extent == 1 or stride == want
            for extent, stride, want in zip(self.shape, self.strides, expected, strict=True)
        )

    @property
    def flags(self) -> SimpleNamespace:
        """``flags.c_contiguous`` as on a NumPy array."""
        return SimpleNamespace(c_contiguous=self.is_contiguous)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"CudaArray(shape={self.shape}, dtype={self.dtype}, offset={self.offset})"

    # ---- views ----------------------------------------------------------------------------
    def reshape(self, *shape) -> CudaArray:
        """A view with another shape; the array must be contiguous (NumPy would copy)."""
        new_shape = _resolve_shape(shape, self.size)
        if not self.is_contiguous:
            raise DeviceArrayError(f"cannot reshape a non-contiguous device view {self.shape}")
        return CudaArray(self.data, self.offset, new_shape, _c_strides(new_shape))

    def swapaxes(self, first: int, second: int) -> CudaArray:
        """The view with axes ``first`` and ``second`` exchanged (no copy)."""
        shape, strides = list(self.shape), list(self.strides)
        shape[first], shape[second] = shape[second], shape[first]
        strides[first], strides[second] = strides[second], strides[first]
        return CudaArray(self.data, self.offset, tuple(shape), tuple(strides))

    def transpose(self, *axes) -> CudaArray:
        """The view with axes permuted as ``axes`` (reversed when none are given)."""
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        if sorted(axes) != list(range(self.ndim)):
            raise DeviceArrayError(f"axes {axes} do not permute {self.ndim} dimensions")
        return CudaArray(
            self.data,
            self.offset,
            tuple(self.shape[a] for a in axes),
            tuple(self.strides[a] for a in axes),
        )

    @property
    def T(self) -> CudaArray:
        """All axes reversed (no copy)."""
        return CudaArray(self.data, self.offset, self.shape[::-1], self.strides[::-1])

    def __getitem__(self, key) -> CudaArray:
        if key is Ellipsis:
            return self
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise DeviceArrayError(f"device arrays support a[start:stop] slices only, got {key!r}")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(stop, start)
        offset = self.offset + start * self.strides[0]
        return CudaArray(self.data, offset, (stop - start, *self.shape[1:]), self.strides)

    def __setitem__(self, key, value) -> None:
        if key is not Ellipsis and key != slice(None):
            raise DeviceArrayError("device arrays support view[...] = host_array only")
        copy_host_to_device(np.asarray(value), self)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        host = copy_device_to_host(self)
        return host if dtype is None else host.astype(dtype)

    @property
    def dev(self):
        """The view as a numba-cuda device array (contiguous views only), for kernels."""
        if self._dev is None:
            if not self.is_contiguous:
                raise DeviceArrayError(
                    f"a kernel needs a contiguous array, got a strided view {self.shape}"
                )
            flat = self.data[self.offset : self.offset + max(self.size, 1)]
            self._dev = flat.reshape(self.shape) if self.size else flat
        return self._dev

    @property
    def flat(self):
        """The view as a 1-D numba-cuda device array (contiguous views only)."""
        return self.data[self.offset : self.offset + max(self.size, 1)]


def copy_host_to_device(host: np.ndarray, out: CudaArray) -> None:
    """``out[...] = host`` (cast to ``out``'s dtype; sizes must agree)."""
    if host.size != out.size and host.size != 1:
        raise DeviceArrayError(
            f"cannot copy {host.size} host values into a device array of {out.size}"
        )
    values = np.broadcast_to(np.asarray(host, dtype=out.dtype), out.shape)
    if out.size:
        out.flat.copy_to_device(np.ascontiguousarray(values).reshape(-1))


def copy_device_to_host(array: CudaArray) -> np.ndarray:
    """A host copy of ``array`` (strided views are gathered on the host)."""
    if array.is_contiguous:
        if not array.size:
            return np.zeros(array.shape, dtype=array.dtype)
        return array.flat.copy_to_host().reshape(array.shape)
    base = array.data.copy_to_host()
    item = base.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        base[array.offset :], array.shape, tuple(s * item for s in array.strides)
    ).copy()
