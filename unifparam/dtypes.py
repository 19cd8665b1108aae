"""One dtype vocabulary: canonical names, numpy types, safetensors codes, casts, policies.

Every framework's dtype object or string has one canonical name here, the name numpy and
``ml_dtypes`` give it (the types JAX, TensorFlow and safetensors already use)::

    >>> canonical("bf16"), canonical("torch.float16"), canonical(np.float32)
    ('bfloat16', 'float16', 'float32')
    >>> numpy_dtype("bfloat16").itemsize, CODES["bfloat16"]
    (2, 'BF16')

A :class:`Policy` separates storage from compute, as Keras' ``DTypePolicy`` does:
``policy("mixed_bfloat16")`` stores float32 and computes in bfloat16. Frameworks are never
imported: their dtype objects are read by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._lazy import np

#: Floating dtypes parameters are stored in, widest first.
FLOATS = ("float64", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2")
INTS = ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8")
#: Every canonical name.
NAMES = FLOATS + INTS + ("bool",)
#: The dtypes numpy has only through ml_dtypes (no buffer protocol, no dlpack, no torch
#: ``from_numpy``): move them as unsigned ints of their width.
EXTENSIONS = ("bfloat16", "float8_e4m3fn", "float8_e5m2")

#: canonical name -> safetensors dtype code (the file's ``"dtype"`` field)
CODES = {"float64": "F64", "float32": "F32", "bfloat16": "BF16", "float16": "F16",
         "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int64": "I64",
         "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32",
         "uint16": "U16", "uint8": "U8", "bool": "BOOL"}
#: safetensors dtype code -> canonical name
FROM_CODE = {v: k for k, v in CODES.items()}

_ALIASES = {
    "float": "float32", "fp32": "float32", "f32": "float32", "single": "float32",
    "double": "float64", "fp64": "float64", "f64": "float64",
    "half": "float16", "fp16": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "float8_e4m3": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn", "e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2", "e5m2": "float8_e5m2",
    "long": "int64", "int": "int32", "short": "int16", "bool_": "bool", "boolean": "bool",
}


def _unsupported(what: Any, why: str = "") -> Exception:
    from .errors import ArgumentError
    return ArgumentError(f"Unknown dtype {what!r}{why}. Use one of: {', '.join(NAMES)} "
                         f"(or a framework's dtype object, e.g. torch.bfloat16).")


def canonical(dtype: Any) -> str:
    """The canonical name of a dtype given as a string or any framework's dtype object.

    Strings may be canonical, a framework's spelling (``"torch.bfloat16"``, ``"half"``) or a
    safetensors code (``"BF16"``). Objects: numpy/ml_dtypes/jax types, torch and TensorFlow
    dtypes, MXNet's numpy types.

    >>> canonical("F8_E4M3"), canonical("half"), canonical(np.dtype("int64"))
    ('float8_e4m3fn', 'float16', 'int64')
    """
    if isinstance(dtype, str):
        text = dtype
    elif dtype is float or dtype is int or dtype is bool:  # np.dtype(x) == float: not `in`
        text = {float: "float32", int: "int64", bool: "bool"}[dtype]
    elif isinstance(dtype, type) and dtype.__module__.startswith(("numpy", "ml_dtypes", "jax")):
        text = numpy_name(dtype)
    elif hasattr(dtype, "as_numpy_dtype") and hasattr(dtype, "name"):  # tf.DType
        text = str(dtype.name)
    elif type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
        text = str(dtype)
    elif hasattr(dtype, "kind") and hasattr(dtype, "itemsize"):  # a numpy dtype
        text = numpy_name(dtype)
    else:
        raise _unsupported(dtype, f" ({type(dtype).__name__})")
    if text in FROM_CODE:
        return FROM_CODE[text]
    low = text.lower()
    for prefix in ("torch.", "tf.", "jnp.", "np.", "numpy.", "jax.numpy."):
        low = low.removeprefix(prefix)
    low = _ALIASES.get(low, low)
    if low not in NAMES:
        raise _unsupported(dtype)
    if low in EXTENSIONS:  # from now on np.dtype("bfloat16") works everywhere
        _ml()
    return low


def numpy_name(dtype: Any) -> str:
    """numpy's name of a numpy (or ml_dtypes) dtype or type."""
    _ml()
    return np.dtype(dtype).name


def _ml() -> None:
    """Register ``ml_dtypes``' types with numpy (np.dtype('bfloat16') works afterwards)."""
    import ml_dtypes  # noqa: F401


def numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype (ml_dtypes for bfloat16 and float8) of a dtype.

    >>> numpy_dtype("bfloat16")
    dtype(bfloat16)
    """
    _ml()
    return np.dtype(canonical(dtype))


def is_float(dtype: Any) -> bool:
    """True for floating dtypes (numpy's kind is 'V' for bfloat16 and float8: ask here).

    >>> is_float("bfloat16"), is_float("int8")
    (True, False)
    """
    return canonical(dtype) in FLOATS


def of(arr: Any) -> str:
    """The canonical dtype name of an array (numpy or any framework's).

    >>> of(np.zeros(2, np.float16))
    'float16'
    """
    return canonical(arr.dtype)


def stream(dtype: Any) -> str:
    """The dtype seeded values of ``dtype`` are drawn in: float32 for the narrow floats
    (bfloat16, float16, float8), which are then rounded to nearest even, so every backend
    holds the same bits; float64 draws its own stream.

    >>> stream("bfloat16"), stream("float64")
    ('float32', 'float64')
    """
    name = canonical(dtype)
    return "float32" if name in FLOATS[2:] else name


def finfo(dtype: Any) -> Any:
    """``ml_dtypes.finfo``: numpy's finfo, for bfloat16 and float8 too."""
    import ml_dtypes
    return ml_dtypes.finfo(numpy_dtype(dtype))


def cast(value: Any, dtype: Any) -> np.ndarray:
    """``value`` as a numpy array of ``dtype``, rounded to nearest even (ml_dtypes).

    Into an integer or bool dtype the cast must be exact: a
    fractional or out-of-range value raises :class:`~unifparam.ArgumentValueError`.

    >>> cast(np.array([1.0, 1/3], np.float32), "bfloat16")
    array([1, 0.333984], dtype=bfloat16)
    """
    target = numpy_dtype(dtype)
    arr = np.asarray(value)
    if arr.dtype == target:
        return arr
    if not is_float(target) and arr.dtype.kind not in "biu":
        from .errors import ArgumentValueError
        wide = arr.astype(np.float64)
        info = np.iinfo(target) if target.kind in "iu" else None
        bad = ~np.isfinite(wide) | (wide != np.round(wide))
        if info is not None:
            bad |= (wide < info.min) | (wide > info.max)
        else:
            bad |= (wide != 0) & (wide != 1)
        if bad.any():
            example = wide[bad].flat[0]
            raise ArgumentValueError(
                f"Cannot cast {numpy_name(arr.dtype)} values to {target.name} exactly: "
                f"{example!r} has no {target.name} value. Round the values first, or keep "
                f"a floating dtype.")
    return arr.astype(target)


# ---- policies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """Storage and compute dtypes of parameters: ``Policy("float32", "bfloat16")`` is
    Keras' ``"mixed_bfloat16"`` (float32 variables, bfloat16 maths).

    >>> policy("mixed_bfloat16")
    Policy(storage='float32', compute='bfloat16')
    """

    storage: str
    compute: str

    @property
    def mixed(self) -> bool:
        return self.storage != self.compute


def policy(spec: Any) -> Policy:
    """A :class:`Policy` from a dtype (storage = compute), ``"mixed_<dtype>"``, a Keras
    ``DTypePolicy`` or a Policy.

    >>> policy("bfloat16"), policy("mixed_float16").storage
    (Policy(storage='bfloat16', compute='bfloat16'), 'float32')
    """
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, str) and spec.startswith("mixed_"):
        compute = canonical(spec.removeprefix("mixed_"))
        if compute not in ("bfloat16", "float16"):
            raise _unsupported(spec, ": mixed policies compute in bfloat16 or float16")
        return Policy("float32", compute)
    if hasattr(spec, "variable_dtype") and hasattr(spec, "compute_dtype"):  # Keras DTypePolicy
        return Policy(canonical(spec.variable_dtype), canonical(spec.compute_dtype))
    name = canonical(spec)
    return Policy(name, name)


def policies(spec: Any, names: Mapping[str, Any]) -> dict[str, Policy]:
    """Each storage's policy under ``spec``: one dtype/policy for all, or a dict of name
    pattern -> dtype/policy (first match wins, as sharding layouts; ``"*"`` for the rest;
    unmatched storages keep float32). ``names`` maps each storage to all its names.

    >>> policies({"*.bias": "float32", "*": "bfloat16"}, {"0.weight": ["0.weight"],
    ...                                                   "0.bias": ["0.bias"]})["0.weight"]
    Policy(storage='bfloat16', compute='bfloat16')
    """
    if not isinstance(spec, Mapping):
        one = policy(spec)
        return dict.fromkeys(names, one)
    rules = [(p, policy(v)) for p, v in spec.items()]
    every = [n for uses in names.values() for n in uses]
    for pattern, _ in rules:
        if not isinstance(pattern, str) or not any(fnmatch.fnmatchcase(n, pattern)
                                                   for n in every):
            from .errors import UnknownNameError
            raise UnknownNameError(f"dtype pattern {pattern!r} matches no parameter. "
                                   f"Parameters are named like "
                                   f"{', '.join(map(repr, every[:4]))}.")
    default = Policy("float32", "float32")
    return {root: next((pol for pattern, pol in rules
                        for n in uses if fnmatch.fnmatchcase(n, pattern)), default)
            for root, uses in names.items()}
