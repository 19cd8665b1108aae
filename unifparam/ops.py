"""Portable array operations for a block's ``forward``, written once, bound per backend.

Inside a forward each function runs on the backend's own arrays through the namespace its
adapter binds (PyTorch: ``torch``; Keras: ``keras.ops``; Flax: ``jax.numpy``; MXNet:
``mx.nd``); outside any
forward they run on numpy. Signatures follow numpy (``axis=``, ``keepdims=``)::

    >>> import numpy as np
    >>> from unifparam import ops
    >>> ops.relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    >>> float(ops.sum(ops.abs(np.array([-1.0, 2.0]))))
    3.0

Arrays are made in numpy and handed to the backend (:func:`asarray`), so ``rand(...,
seed=0)`` gives the same values on every backend::

    >>> ops.arange(3), ops.rand((2,), seed=0).shape
    (array([0., 1., 2.], dtype=float32), (2,))
    >>> float(ops.norm(np.array([3.0, 4.0])))
    5.0

Comparisons are the arrays' own operators (``ops.sum(x) > 1``); in eager mode their
result works in Python control flow (``while``, ``if``) on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._binding import current

#: Every op an adapter binds: its ``Binding.ops`` maps these names to native functions.
NAMES = ("matmul", "transpose", "reshape", "concat", "sum", "mean", "max", "min", "abs",
         "exp", "log", "sqrt", "square", "maximum", "minimum", "where", "relu", "sigmoid",
         "tanh", "gelu", "softmax", "greater", "less", "equal", "zeros_like", "ones_like",
         "asarray")


#: ops named otherwise in the Python array API standard
ARRAY_API_NAMES = {"transpose": "permute_dims"}


def _numpy_table() -> dict[str, Callable[..., Any]]:
    import math

    import numpy as np

    def softmax(x: Any, axis: int = -1) -> Any:
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    def gelu(x: Any) -> Any:  # the exact (erf) form, torch's default
        erf = np.vectorize(math.erf, otypes=[np.asarray(x).dtype])
        return 0.5 * x * (1.0 + erf(np.asarray(x) / math.sqrt(2.0)))

    table = {name: getattr(np, name) for name in NAMES if hasattr(np, name)}
    return {**table, "asarray": lambda v: np.asarray(v, np.float32),
            "concat": lambda xs, axis=0: np.concatenate(xs, axis=axis),
            "relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
            "gelu": gelu, "softmax": softmax}


_NUMPY: dict[str, Callable[..., Any]] = {}


def _op(name: str) -> Callable[..., Any]:
    binding = current()
    if binding is not None:
        if name in binding.ops:
            return binding.ops[name]
        if binding.namespace is not None:
            return getattr(binding.namespace, ARRAY_API_NAMES.get(name, name))
    if not _NUMPY:
        _NUMPY.update(_numpy_table())
    return _NUMPY[name]


def matmul(a: Any, b: Any) -> Any:
    """Matrix product ``a @ b``."""
    return _op("matmul")(a, b)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Any:
    """Axes reversed (or permuted by ``axes``), as ``numpy.transpose``."""
    return _op("transpose")(x, tuple(reversed(range(len(x.shape)))) if axes is None
                            else tuple(axes))


def reshape(x: Any, shape: Sequence[int]) -> Any:
    """``x`` with a new shape (one size may be -1)."""
    return _op("reshape")(x, tuple(shape))


def concat(xs: Sequence[Any], axis: int = 0) -> Any:
    """Arrays joined along ``axis``."""
    return _op("concat")(list(xs), axis=axis)


def sum(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Sum over ``axis`` (all axes by default)."""
    return _op("sum")(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    """Mean over ``axis`` (all axes by default)."""
    return _op("mean")(x, axis=axis, keepdims=keepdims)


def max(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Largest element over ``axis``."""
    return _op("max")(x, axis=axis, keepdims=keepdims)


def min(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Smallest element over ``axis``."""
    return _op("min")(x, axis=axis, keepdims=keepdims)


def _unary(name: str, doc: str) -> Callable[[Any], Any]:
    def fn(x: Any) -> Any:
        return _op(name)(x)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


abs = _unary("abs", "Elementwise absolute value.")  # noqa: A001
exp = _unary("exp", "Elementwise exponential.")
log = _unary("log", "Elementwise natural logarithm.")
sqrt = _unary("sqrt", "Elementwise square root.")
square = _unary("square", "Elementwise square.")
relu = _unary("relu", "``max(x, 0)``.")
sigmoid = _unary("sigmoid", "``1 / (1 + exp(-x))``.")
tanh = _unary("tanh", "Hyperbolic tangent.")
gelu = _unary("gelu", "GELU, the exact (erf) form.")
zeros_like = _unary("zeros_like", "Zeros of ``x``'s shape and dtype.")
ones_like = _unary("ones_like", "Ones of ``x``'s shape and dtype.")


def softmax(x: Any, axis: int = -1) -> Any:
    """Softmax over ``axis``."""
    return _op("softmax")(x, axis=axis)


def maximum(a: Any, b: Any) -> Any:
    """Elementwise larger of ``a`` and ``b`` (either may be a Python number)."""
    return _op("maximum")(a, b)


def minimum(a: Any, b: Any) -> Any:
    """Elementwise smaller of ``a`` and ``b`` (either may be a Python number)."""
    return _op("minimum")(a, b)


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` holds, else ``b``."""
    return _op("where")(cond, a, b)


def greater(a: Any, b: Any) -> Any:
    """``a > b`` elementwise."""
    return _op("greater")(a, b)


def less(a: Any, b: Any) -> Any:
    """``a < b`` elementwise."""
    return _op("less")(a, b)


def equal(a: Any, b: Any) -> Any:
    """``a == b`` elementwise."""
    return _op("equal")(a, b)


def asarray(value: Any) -> Any:
    """``value`` (numpy, a list, a number) as the backend's float32 array."""
    import numpy as np
    return _op("asarray")(np.asarray(value, np.float32))


def zeros(shape: int | Sequence[int]) -> Any:
    """Zeros of ``shape`` (float32)."""
    import numpy as np
    return asarray(np.zeros(shape, np.float32))


def ones(shape: int | Sequence[int]) -> Any:
    """Ones of ``shape`` (float32)."""
    import numpy as np
    return asarray(np.ones(shape, np.float32))


def full(shape: int | Sequence[int], value: float) -> Any:
    """``value`` everywhere in ``shape`` (float32)."""
    import numpy as np
    return asarray(np.full(shape, value, np.float32))


def arange(start: float, stop: float | None = None, step: float = 1) -> Any:
    """``start, start + step, ...`` below ``stop`` (float32), as ``numpy.arange``."""
    import numpy as np
    return asarray(np.arange(start, stop, step) if stop is not None else np.arange(start))


def rand(shape: int | Sequence[int], seed: int | None = None) -> Any:
    """Uniform values in [0, 1): with ``seed``, the same on every backend."""
    import numpy as np
    return asarray(np.random.default_rng(seed).random(shape, np.float32))


def randn(shape: int | Sequence[int], seed: int | None = None) -> Any:
    """Standard normal values: with ``seed``, the same on every backend."""
    import numpy as np
    return asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def norm(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    """Euclidean (Frobenius) norm over ``axis`` (all axes by default)."""
    return sqrt(sum(square(x), axis=axis, keepdims=keepdims))


#: the spec's activation names -> ops (``None``/"identity": unchanged)
ACTIVATIONS: dict[str | None, Callable[[Any], Any]] = {
    None: lambda x: x, "identity": lambda x: x, "relu": relu, "sigmoid": sigmoid,
    "tanh": tanh, "gelu": gelu, "softmax": softmax,
}
