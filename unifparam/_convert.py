"""Backend arrays as numpy, and the global default seed.

    >>> import numpy as np
    >>> to_numpy({"a": [np.float32(1)], "b": (np.ones(2),)})
    {'a': [array(1., dtype=float32)], 'b': (array([1., 1.]),)}
"""

from __future__ import annotations

from typing import Any

_SEED: list[int | None] = [None]


def to_numpy(x: Any) -> Any:
    """Any backend's array (or a list/tuple/dict of them) as numpy, detached, on the host."""
    import numpy as np
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x)
    if hasattr(x, "full_tensor") and hasattr(x, "placements"):  # torch DTensor: gathered
        x = x.full_tensor()
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch
        return torch_numpy(x.detach().cpu())
    if hasattr(x, "asnumpy"):  # mxnet
        return x.asnumpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tensorflow eager
        return np.asarray(x.numpy())
    return np.asarray(x)


#: dtypes torch's ``.numpy()`` refuses -> the integer type of their width to view them as
TORCH_VIEWS = {"bfloat16": "int16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}


def torch_numpy(t: Any) -> Any:
    """A CPU torch tensor as numpy of its own dtype, bfloat16 and float8 included (viewed
    as integers of their width, then as the ``ml_dtypes`` type: no copy, no rounding)."""
    import sys
    name = str(t.dtype).removeprefix("torch.")
    if name not in TORCH_VIEWS:
        return t.numpy()
    from .dtypes import numpy_dtype
    bits = getattr(sys.modules["torch"], TORCH_VIEWS[name])
    return t.view(bits).numpy().view(numpy_dtype(name))


def numpy_input(x: Any, int_dtype: str | None = None) -> Any:
    """A model input that is not already the framework's array, as the C-ordered numpy
    array every adapter hands its framework: floats as float32 (the parameters' dtype),
    integers as ``int_dtype`` if given (jax's default int32).

    >>> numpy_input([1.0, 2.0]).dtype, numpy_input([1, 2], "int32").dtype
    (dtype('float32'), dtype('int32'))
    """
    import numpy as np
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    elif int_dtype is not None and arr.dtype.kind in "iu":
        arr = arr.astype(int_dtype, copy=False)
    return np.asarray(arr, order="C")


def set_seed(seed: int | None) -> None:
    """The seed every initialization uses when none is given (None: fresh randomness).

    With it, ``initialize(net)`` and a block's own parameters get the same values on every
    backend, without ``seed=`` on every call.

    >>> set_seed(0); default_seed()
    0
    >>> set_seed(None)
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"set_seed takes an int or None, got {type(seed).__name__}.")
    _SEED[0] = seed


def default_seed() -> int | None:
    """The seed set by :func:`set_seed` (None if none)."""
    return _SEED[0]
