"""Buffers that frameworks adopt without copying, and fast layout changes into them.

    >>> out = aligned_empty(6, "float32")      # 64-byte aligned (page-aligned when large)
    >>> to_layout(np.arange(6.0).reshape(2, 3), (1, 0)).shape
    (3, 2)
"""

from __future__ import annotations

from ._lazy import np

#: Buffers at least this large are mapped with their pages populated up front.
POPULATE_BYTES = 4 << 20


def aligned_empty(size: int, dtype: str | np.dtype, align: int = 64) -> np.ndarray:
    """A fresh 1-D array whose data starts on an ``align``-byte boundary.

    Frameworks adopt such buffers without a copy (jax needs 64 bytes; torch any). Large
    ones are anonymous maps with their pages populated by the kernel in one call, about
    six times faster here than faulting them in one by one as they are first written.
    """
    import mmap
    dtype = np.dtype(dtype)
    nbytes = size * dtype.itemsize
    if nbytes >= POPULATE_BYTES and hasattr(mmap, "MAP_POPULATE"):
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
        return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=dtype)  # page-aligned
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype)


def kernel_perm(ndim: int, to_native: bool) -> tuple[int, ...]:
    """Axes permutation between a canonical kernel ``(out, in, *k)`` and the ``(*k, in, out)``
    layout of Keras and Flax (a dense kernel is the 2-D case: ``(in, out)``).

    >>> kernel_perm(4, to_native=True), kernel_perm(4, to_native=False)
    ((2, 3, 1, 0), (3, 2, 0, 1))
    """
    if to_native:
        return (*range(2, ndim), 1, 0)
    return (ndim - 1, ndim - 2, *range(ndim - 2))


def to_layout(value: np.ndarray, perm: tuple[int, ...] | None, dtype: object = None) -> np.ndarray:
    """``value.transpose(perm)`` as a fresh aligned, C-contiguous array of ``dtype``.

    A 2-D transpose is copied in 64 x 64 blocks, which stay in cache: twice as fast as one
    strided copy for large kernels.
    """
    src = np.asarray(value) if perm is None else np.transpose(value, perm)
    out = aligned_empty(src.size, dtype or src.dtype).reshape(src.shape)
    if perm is None or src.ndim != 2 or src.size < 1 << 16:
        np.copyto(out, src)
        return out
    rows, cols = src.shape
    b = 64
    for i in range(0, rows, b):
        for j in range(0, cols, b):
            out[i:i + b, j:j + b] = src[i:i + b, j:j + b]
    return out
