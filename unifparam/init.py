"""Initializers: portable numpy maths and a seeded random stream per parameter.

With a seed, a parameter's values depend only on (seed, canonical name, shape), so every
backend gets bit-identical values whatever order its layers materialize in::

    >>> import unifparam
    >>> unifparam.initialize(net, unifparam.init.Normal(std=0.01), seed=0)

An initializer registered for a whole model fills the *weights* (its ``roles``); biases and
normalization parameters get their standard values (zeros, ones), as in Gluon and in the
D2L chapters. Selected parameters (``select=``) get the initializer whatever their role.

User-defined initializers are a plain function ``f(name, shape, rng) -> array`` or a
subclass of :class:`Initializer` overriding :meth:`Initializer.sample`.
"""

from __future__ import annotations

import math as _math
import typing as _typing
from dataclasses import dataclass as _dataclass

from ._buffers import aligned_empty as _aligned_empty
from ._lazy import np as _np
from .errors import ArgumentError as _ArgumentError
from .errors import InitializerError as _InitializerError
from .errors import fmt_shape as _fmt_shape

if _typing.TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import numpy as np

    Block = tuple[slice | tuple[int, int], ...]

__all__ = [
    "Constant", "Default", "Distribution", "FunctionInit", "Initializer", "KaimingNormal",
    "KaimingUniform", "Normal", "Ones", "Orthogonal", "Target", "TruncatedNormal", "Uniform",
    "XavierNormal", "XavierUniform", "Zeros", "fans",
]

#: Elements per independent random stream. Fixed so values never depend on thread count.
CHUNK = 1 << 20
#: Elements a block is made in at a time (its temporaries stay this small).
_PIECE = 1 << 16
WEIGHT_ROLES = ("weight", "embedding")
ROLE_DEFAULTS = {"bias": 0.0, "shift": 0.0, "running_mean": 0.0, "scale": 1.0, "running_var": 1.0}


@_dataclass(frozen=True)
class Target:
    """What an initializer is asked to fill: one parameter, in canonical layout."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    role: str = "weight"
    axes: tuple[str, ...] | None = None
    fan_in: int = 1
    fan_out: int = 1


def fans(shape: tuple[int, ...], axes: tuple[str, ...] | None) -> tuple[int, int]:
    """(fan_in, fan_out) from logical axes; PyTorch's positional rule when axes are unknown.

    >>> fans((16, 8, 3, 3), ("out", "in", "kh", "kw"))
    (72, 144)
    """
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    if axes is None or len(axes) != len(shape):
        axes = ("out", "in") + tuple(f"r{i}" for i in range(len(shape) - 2))
    size = dict(zip(axes, shape))
    n_out = size.get("out", size.get("vocab", 1))
    n_in = size.get("in", size.get("embed", 1))
    receptive = _math.prod(d for a, d in size.items() if a not in ("out", "in", "vocab", "embed"))
    return n_in * receptive, n_out * receptive


def stream_key(seed: int, name: str) -> int:
    """The 128-bit key of parameter ``name``'s random stream under ``seed``."""
    import hashlib
    digest = hashlib.blake2b(f"{int(seed)}\0{name}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def _generator(key: int, chunk: int) -> np.random.Generator:
    # PCG64 fills float32 about 1.6x faster than Philox here (PERF-FACTS); each chunk gets
    # its own SeedSequence child, so streams are independent and order-free.
    seeds = _np.random.SeedSequence(key, spawn_key=(chunk,))
    return _np.random.Generator(_np.random.PCG64(seeds))


def rng_for(seed: int, name: str, chunk: int = 0) -> np.random.Generator:
    """The generator for one chunk of one parameter (independent of everything else)."""
    return _generator(stream_key(seed, name), chunk)


class Initializer:
    """Base class. Override :meth:`sample` (whole array) or, for chunked distributions, ``_draw``.

    >>> class Ones(Initializer):
    ...     def sample(self, target, rng):
    ...         return np.ones(target.shape)
    """

    #: Roles filled when registered for a whole model (others get ROLE_DEFAULTS).
    roles: tuple[str, ...] | None = WEIGHT_ROLES

    def sample(self, target: Target, rng: np.random.Generator) -> np.ndarray:
        """Values for ``target``, any float dtype, canonical layout."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(target, rng).")

    def generate(self, target: Target, seed: int) -> np.ndarray:
        """Validated values for ``target`` under ``seed``: the one entry point the core calls."""
        return validate(target, self.sample(target, rng_for(seed, target.name)), self)

    def generate_block(self, target: Target, seed: int, index: Block) -> np.ndarray:
        """``generate(target, seed)[index]`` for a block (one slice per dimension).

        This fallback makes the whole parameter; element-wise distributions and constants
        override it to make the block alone (see :meth:`Distribution.generate_block`).
        """
        return self.generate(target, seed)[block_slices(target.shape, index)].copy()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


_POOL: Any = None


def _pool() -> Any:
    """One thread per core; numpy's generators and ufuncs release the GIL on big arrays."""
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                   thread_name_prefix="unifparam-init")
    return _POOL


class Distribution(Initializer):
    """An elementwise distribution drawn chunk by chunk, each chunk from its own stream.

    Chunks are filled in parallel; values never depend on how many threads ran.
    """

    def _draw(self, rng: np.random.Generator, out: np.ndarray, target: Target) -> None:
        raise NotImplementedError

    def generate(self, target: Target, seed: int, dtype: str | None = None) -> np.ndarray:
        """Values drawn in ``target.dtype``; with ``dtype`` (a narrower float: bfloat16,
        float16, float8) each chunk is drawn so and rounded to nearest even into the
        result, so no full-size copy in ``target.dtype`` is ever made."""
        from .dtypes import numpy_dtype
        store = numpy_dtype(dtype or target.dtype)
        out = _aligned_empty(_math.prod(target.shape), store)
        key = stream_key(seed, target.name)

        def fill(k: int) -> None:
            part = out[k * CHUNK:(k + 1) * CHUNK]
            if store == _np.dtype(target.dtype):
                self._draw(_generator(key, k), part, target)
                return
            drawn = _np.empty(part.size, target.dtype)
            self._draw(_generator(key, k), drawn, target)
            part[...] = drawn  # ml_dtypes' cast: round to nearest even

        chunks = range(-(-out.size // CHUNK))
        if len(chunks) > 1:
            list(_pool().map(fill, chunks))
        else:
            fill(0)
        return out.reshape(target.shape)

    def sample(self, target: Target, rng: np.random.Generator) -> np.ndarray:
        out = _np.empty(_math.prod(target.shape), dtype=_np.dtype(target.dtype))
        self._draw(rng, out, target)
        return out.reshape(target.shape)

    def generate_block(self, target: Target, seed: int, index: Block) -> np.ndarray:
        """The block ``index`` of ``generate(target, seed)``, bit for bit, made alone.

        The block is a set of flat runs; each run's elements are drawn from their chunk's
        stream at their own position (PCG64 ``advance``), nothing before them is generated.

        >>> t = Target("w", (8, 6))
        >>> b = Normal(std=1.0).generate_block(t, 0, (slice(2, 4), slice(3, 6)))
        >>> bool((b == Normal(std=1.0).generate(t, 0)[2:4, 3:6]).all())
        True
        """
        slices = block_slices(target.shape, index)
        size = _math.prod(target.shape)
        key = stream_key(seed, target.name)
        out = _np.empty(_math.prod(s.stop - s.start for s in slices), dtype=target.dtype)
        stream: _ChunkStream | None = None  # runs go forward: one chunk's stream at a time
        at = 0
        for start, length in _runs(target.shape, slices):
            while length:
                k, lo = divmod(start, CHUNK)
                take = min(length, CHUNK - lo, _PIECE)  # bounded temporaries
                if stream is None or stream.chunk != k:
                    stream = _ChunkStream(self, key, k, min(CHUNK, size - k * CHUNK), target)
                out[at:at + take] = stream.elements(lo, lo + take)
                start, length, at = start + take, length - take, at + take
        return out.reshape(tuple(s.stop - s.start for s in slices))

    def _draw_range(self, stream: _ChunkStream, lo: int, hi: int) -> np.ndarray | None:
        """Elements ``[lo, hi)`` of one chunk from its uniforms, or None: draw the chunk."""
        return None


def _finite(cls: str, arg: str, value: float) -> float:
    """``value`` as a float, or an InitializerError naming the initializer and argument."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _ArgumentError(f"{cls}({arg}={value!r}): {arg} must be a real number, got "
                             f"{type(value).__name__}.")
    number = float(value)
    if not _math.isfinite(number):
        raise _InitializerError(f"{cls}({arg}={value!r}): {arg} must be a finite number.")
    return number


class Uniform(Distribution):
    """U(low, high): both bounds or neither (default U(-0.07, 0.07), Gluon's default).

    One bound alone is refused, because frameworks disagree on what one number means:
    Gluon's ``Uniform(0.07)`` is U(-0.07, 0.07), Flax's ``uniform(0.07)`` is U(0, 0.07).

    >>> Uniform(-0.1, 0.1)        # as torch.nn.init.uniform_(w, a, b) and Keras RandomUniform
    Uniform(low=-0.1, high=0.1)
    """

    def __init__(self, low: float | None = None, high: float | None = None):
        if low is None and high is None:
            low, high = -0.07, 0.07
        elif low is None or high is None:
            given = low if high is None else high
            raise _InitializerError(
                f"Uniform({given!r}) is ambiguous: Gluon reads one number as U(-s, s), Flax as "
                f"U(0, s). Give both bounds: Uniform({-abs(given)!r}, {abs(given)!r}) or "
                f"Uniform(0.0, {abs(given)!r}).")
        self.low, self.high = _finite("Uniform", "low", low), _finite("Uniform", "high", high)
        if not self.low < self.high:
            raise _InitializerError(
                f"Uniform(low={self.low!r}, high={self.high!r}): low must be below high. "
                f"For a single value use Constant({self.low!r}).")

    def _bounds(self, target: Target) -> tuple[float, float]:
        return self.low, self.high

    def _draw(self, rng: np.random.Generator, out: np.ndarray, target: Target) -> None:
        lo, hi = self._bounds(target)
        rng.random(dtype=out.dtype, out=out)
        out *= out.dtype.type(hi - lo)
        out += out.dtype.type(lo)

    def _draw_range(self, stream: _ChunkStream, lo: int, hi: int) -> np.ndarray | None:
        low, high = self._bounds(stream.target)
        out = stream.uniforms(lo, hi - lo)
        out *= out.dtype.type(high - low)
        out += out.dtype.type(low)
        return out


def standard_normal(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill ``out`` with N(0, 1) by the Box-Muller transform of uniforms (as torch's normal_).

    Faster than numpy's ziggurat on these streams; in float32 the tails end at about
    5.8 standard deviations, where 1 - u reaches 2**-24.
    """
    n = out.size
    half = (n + 1) // 2
    r = rng.random(half, dtype=out.dtype)
    theta = rng.random(half, dtype=out.dtype)
    _np.subtract(out.dtype.type(1), r, out=r)
    _np.log(r, out=r)
    r *= out.dtype.type(-2)
    _np.sqrt(r, out=r)
    theta *= out.dtype.type(2 * _math.pi)
    _np.cos(theta[:n - half] if n % 2 else theta, out=out[half:])
    out[half:] *= r[:n - half]
    _np.sin(theta, out=out[:half])
    out[:half] *= r


def standard_normal_range(stream: _ChunkStream, lo: int, hi: int) -> np.ndarray:
    """Elements ``[lo, hi)`` of :func:`standard_normal` over a chunk of ``stream.size``.

    Element ``i < half`` is ``sin(2π u[half + i]) · ρ(u[i])``, element ``half + j`` is
    ``cos(2π u[half + j]) · ρ(u[j])``: both are read at their stream positions.
    """
    n = stream.size
    half = (n + 1) // 2
    parts = []
    for a, b, fn, off in ((lo, min(hi, half), _np.sin, 0), (max(lo, half), hi, _np.cos, half)):
        if a >= b:
            continue
        r = stream.uniforms(a - off, b - a)
        theta = stream.uniforms(half + a - off, b - a)
        _np.subtract(r.dtype.type(1), r, out=r)
        _np.log(r, out=r)
        r *= r.dtype.type(-2)
        _np.sqrt(r, out=r)
        theta *= theta.dtype.type(2 * _math.pi)
        fn(theta, out=theta)
        theta *= r
        parts.append(theta)
    return parts[0] if len(parts) == 1 else _np.concatenate(parts)


class Normal(Distribution):
    """N(mean, std**2). One positional number is the std; ``mean`` is keyword-only.

    ``Normal(0.01)`` and ``Normal(std=0.01)`` mean std 0.01, as Gluon's ``Normal(sigma)``
    and Flax's ``normal(stddev)``. Two positional numbers are refused: PyTorch's
    ``normal_(w, 0, 0.01)`` puts the mean first, so ``Normal(0, 0.01)`` would silently mean
    something else to half of the readers. The std must be positive (std 0 is
    ``Constant(mean)``).

    >>> Normal(std=0.01, mean=0.0)    # torch.nn.init.normal_(w, mean=0.0, std=0.01)
    Normal(std=0.01, mean=0.0)
    """

    def __init__(self, std: float = 0.01, *extra: float, mean: float = 0.0):
        name = type(self).__name__
        if extra:
            args = ", ".join(repr(a) for a in (std, *extra))
            fix = (f"{name}(std={extra[0]!r}, mean={std!r})" if len(extra) == 1
                   else f"{name}(std=..., mean=...)")
            raise _InitializerError(
                f"{name}({args}) is ambiguous: PyTorch's normal_(mean, std) puts the mean "
                f"first, Gluon and Flax take the std alone. Name them: {fix}.")
        self.std, self.mean = _finite(name, "std", std), _finite(name, "mean", mean)
        if self.std <= 0:
            raise _InitializerError(
                f"{name}(std={std!r}): std must be positive. For mean {self.mean!r} and no "
                f"spread use Constant({self.mean!r}); for PyTorch's normal_(mean, std) write "
                f"{name}(std=..., mean=...).")

    def _std(self, target: Target) -> float:
        return self.std

    def _draw(self, rng: np.random.Generator, out: np.ndarray, target: Target) -> None:
        standard_normal(rng, out)
        out *= out.dtype.type(self._std(target))
        if self.mean:
            out += out.dtype.type(self.mean)

    def _draw_range(self, stream: _ChunkStream, lo: int, hi: int) -> np.ndarray | None:
        out = standard_normal_range(stream, lo, hi)
        out *= out.dtype.type(self._std(stream.target))
        if self.mean:
            out += out.dtype.type(self.mean)
        return out


class TruncatedNormal(Normal):
    """N(mean, std**2) redrawn outside ``mean ± 2 std`` (Keras and Flax's truncation).

    A block of it draws each chunk it touches whole (at most :data:`CHUNK` elements at a
    time): where the redraws land depends on every element of the chunk.
    """

    def _draw_range(self, stream: _ChunkStream, lo: int, hi: int) -> np.ndarray | None:
        return None

    def _draw(self, rng: np.random.Generator, out: np.ndarray, target: Target) -> None:
        standard_normal(rng, out)
        bad = _np.flatnonzero(_np.abs(out) > 2)
        while bad.size:
            redraw = _np.empty(bad.size, dtype=out.dtype)
            standard_normal(rng, redraw)
            out[bad] = redraw
            bad = bad[_np.abs(redraw) > 2]
        out *= out.dtype.type(self._std(target))
        if self.mean:
            out += out.dtype.type(self.mean)


class Constant(Initializer):
    """Every element ``value``; for a whole model, the weights (biases stay zero, as in D2L)."""

    def __init__(self, value: float):
        self.value = _finite("Constant", "value", value)

    def sample(self, target: Target, rng: np.random.Generator) -> np.ndarray:
        return _np.full(target.shape, self.value, dtype=_np.dtype(target.dtype))

    def generate(self, target: Target, seed: int) -> np.ndarray:
        return self.sample(target, None)  # type: ignore[arg-type]  # no randomness to seed

    def generate_block(self, target: Target, seed: int, index: Block) -> np.ndarray:
        shape = tuple(s.stop - s.start for s in block_slices(target.shape, index))
        return _np.full(shape, self.value, dtype=_np.dtype(target.dtype))


def Zeros() -> Constant:  # noqa: N802 - reads like a class, as in Keras
    """``Constant(0)``."""
    return Constant(0.0)


def Ones() -> Constant:  # noqa: N802
    """``Constant(1)``."""
    return Constant(1.0)


def _check_mode(cls: str, mode: str) -> None:
    if not isinstance(mode, str) or mode not in ("fan_in", "fan_out"):
        raise _InitializerError(f"{cls}(mode={mode!r}): mode must be 'fan_in' or 'fan_out'.")


def _gain(nonlinearity: str, a: float) -> float:
    if not isinstance(nonlinearity, str):
        raise _ArgumentError(f"nonlinearity must be a name (str) such as 'relu', got "
                             f"{type(nonlinearity).__name__} {nonlinearity!r}.")
    gains = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": _math.sqrt(2.0),
             "leaky_relu": _math.sqrt(2.0 / (1 + a * a)), "selu": 0.75}
    if nonlinearity not in gains:
        raise _InitializerError(
            f"Unknown nonlinearity {nonlinearity!r}; expected one of {sorted(gains)}.")
    return gains[nonlinearity]


class XavierUniform(Uniform):
    """Glorot uniform: U(±gain·sqrt(6 / (fan_in + fan_out))), Keras's default kernel init."""

    def __init__(self, gain: float = 1.0):
        self.gain = _finite("XavierUniform", "gain", gain)

    def _bounds(self, target: Target) -> tuple[float, float]:
        b = self.gain * _math.sqrt(6.0 / (target.fan_in + target.fan_out))
        return -b, b


class XavierNormal(Normal):
    """Glorot normal: N(0, gain²·2 / (fan_in + fan_out))."""

    def __init__(self, gain: float = 1.0):
        self.gain, self.mean = _finite("XavierNormal", "gain", gain), 0.0

    def _std(self, target: Target) -> float:
        return self.gain * _math.sqrt(2.0 / (target.fan_in + target.fan_out))


class KaimingUniform(Uniform):
    """He uniform, PyTorch's ``kaiming_uniform_`` (mode ``fan_in`` or ``fan_out``)."""

    def __init__(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
        self.a = _finite("KaimingUniform", "a", a)
        self.mode, self.nonlinearity = mode, nonlinearity
        _check_mode("KaimingUniform", mode)
        _gain(nonlinearity, a)

    def _bounds(self, target: Target) -> tuple[float, float]:
        fan = target.fan_in if self.mode == "fan_in" else target.fan_out
        b = _gain(self.nonlinearity, self.a) * _math.sqrt(3.0 / fan)
        return -b, b


class KaimingNormal(Normal):
    """He normal, PyTorch's ``kaiming_normal_``."""

    def __init__(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
        self.a, self.mode, self.nonlinearity, self.mean = (
            _finite("KaimingNormal", "a", a), mode, nonlinearity, 0.0)
        _check_mode("KaimingNormal", mode)
        _gain(nonlinearity, a)

    def _std(self, target: Target) -> float:
        fan = target.fan_in if self.mode == "fan_in" else target.fan_out
        return _gain(self.nonlinearity, self.a) / _math.sqrt(fan)


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain``, over the first axis vs the rest (as torch)."""

    def __init__(self, gain: float = 1.0):
        self.gain = _finite("Orthogonal", "gain", gain)

    def sample(self, target: Target, rng: np.random.Generator) -> np.ndarray:
        rows = target.shape[0]
        cols = _math.prod(target.shape[1:]) if len(target.shape) > 1 else 1
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = _np.linalg.qr(a)
        q *= _np.sign(_np.diag(r))
        q = q if rows >= cols else q.T
        return (self.gain * q[:rows, :cols]).reshape(target.shape)


class Default(Uniform):
    """PyTorch's default made portable: weights and biases U(±1/sqrt(fan_in)), norms 1 and 0.

    Used when a seed is given without an initializer: ``initialize(net, seed=0)``.
    """

    roles = ("weight", "embedding", "bias")

    def __init__(self) -> None:
        pass

    def _bounds(self, target: Target) -> tuple[float, float]:
        b = 1.0 / _math.sqrt(target.fan_in) if target.role != "embedding" else 0.0
        return (-b, b) if b else (0.0, 0.0)

    def generate(self, target: Target, seed: int, dtype: str | None = None) -> np.ndarray:
        if target.role == "embedding":  # torch draws embeddings N(0, 1)
            return Normal(std=1.0).generate(target, seed, dtype)
        return super().generate(target, seed, dtype)

    def generate_block(self, target: Target, seed: int, index: Block) -> np.ndarray:
        if target.role == "embedding":
            return Normal(std=1.0).generate_block(target, seed, index)
        return super().generate_block(target, seed, index)


class FunctionInit(Initializer):
    """Wraps a plain function ``f(name, shape, rng) -> array`` as an initializer."""

    def __init__(self, fn: Callable[[str, tuple[int, ...], np.random.Generator], np.ndarray]):
        self.fn = fn

    def sample(self, target: Target, rng: np.random.Generator) -> np.ndarray:
        return _np.asarray(self.fn(target.name, target.shape, rng))

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def is_builtin(init: Initializer) -> bool:
    """True for this module's own initializers, whose output is right by construction (a
    wrapped user function is not: its output is checked)."""
    return type(init).__module__ == __name__ and not isinstance(init, FunctionInit)


def as_initializer(obj: Initializer | Callable | None) -> Initializer | None:
    """Accept an Initializer, a plain function or None (the framework's own default)."""
    if obj is None or isinstance(obj, Initializer):
        return obj
    if isinstance(obj, type) and issubclass(obj, Initializer):
        raise _ArgumentError(f"init={obj.__name__}: pass an instance, e.g. {obj.__name__}(), "
                             f"not the class itself.")
    if isinstance(obj, type):
        raise _ArgumentError(f"init={obj.__name__}: expected a unifparam.init initializer "
                             f"instance or a function (name, shape, rng), got a class.")
    if callable(obj):
        return FunctionInit(obj)
    raise _ArgumentError(f"init={obj!r}: expected a unifparam.init initializer (e.g. "
                         f"init.Normal(std=0.01)) or a function (name, shape, rng), got "
                         f"{type(obj).__name__}.")


def block_slices(shape: tuple[int, ...], index: Any) -> tuple[slice, ...]:
    """``index`` (one slice or ``(start, stop)`` per dimension) as normalized step-1 slices.

    >>> block_slices((4, 6), (slice(None), (2, 4)))
    (slice(0, 4, None), slice(2, 4, None))
    """
    index = tuple(index)
    if len(index) != len(shape):
        raise _InitializerError(f"Block {index!r} has {len(index)} dimensions, the parameter "
                                f"{_fmt_shape(shape)} has {len(shape)}.")
    out = []
    for s, n in zip(index, shape):
        start, stop, step = (s.indices(n) if isinstance(s, slice) else (*s, 1))
        if step != 1 or not 0 <= start <= stop <= n:
            raise _InitializerError(f"Block {index!r} is not a step-1 block of "
                                    f"{_fmt_shape(shape)}.")
        out.append(slice(start, stop))
    return tuple(out)


def _runs(shape: tuple[int, ...], slices: tuple[slice, ...]) -> list[tuple[int, int]]:
    """The block's elements as (flat start, length) runs, in row-major order."""
    if not shape:
        return [(0, 1)]
    if any(s.stop == s.start for s in slices):
        return []
    j = len(shape) - 1
    while j > 0 and slices[j] == slice(0, shape[j]):
        j -= 1
    strides = [_math.prod(shape[d + 1:]) for d in range(len(shape))]
    length = (slices[j].stop - slices[j].start) * strides[j]
    starts = _np.array(slices[j].start * strides[j], dtype=_np.int64)
    for d in range(j - 1, -1, -1):
        rows = _np.arange(slices[d].start, slices[d].stop, dtype=_np.int64) * strides[d]
        starts = rows.reshape((-1,) + (1,) * starts.ndim) + starts
    return [(int(a), length) for a in starts.ravel()]


class _ChunkStream:
    """One chunk's stream read at any position: ``uniforms(p, n)`` are the n uniforms
    ``rng.random(dtype=...)`` would give after p of them (float32 takes 32 bits of each
    64-bit PCG64 output, low half first; float64 a whole output)."""

    def __init__(self, dist: Distribution, key: int, chunk: int, size: int, target: Target):
        self.dist, self.key, self.chunk, self.size, self.target = dist, key, chunk, size, target
        self.dtype = _np.dtype(target.dtype)
        self._bits: Any = None
        self._word = 0
        self._whole: np.ndarray | None = None

    def elements(self, lo: int, hi: int) -> np.ndarray:
        if self._whole is None and self.dtype in (_np.float32, _np.float64):
            part = self.dist._draw_range(self, lo, hi)
            if part is not None:
                return part
        if self._whole is None:  # draw the chunk once, keep it while its runs are read
            self._whole = _np.empty(self.size, dtype=self.dtype)
            self.dist._draw(_generator(self.key, self.chunk), self._whole, self.target)
        return self._whole[lo:hi]

    def uniforms(self, start: int, count: int) -> np.ndarray:
        per = 2 if self.dtype == _np.float32 else 1
        first, last = start // per, (start + count - 1) // per
        if self._bits is None or first < self._word:
            seeds = _np.random.SeedSequence(self.key, spawn_key=(self.chunk,))
            self._bits, self._word = _np.random.PCG64(seeds), 0
        self._bits.advance(first - self._word)
        raw = self._bits.random_raw(last - first + 1)
        self._word = last + 1
        if per == 1:
            return (raw >> _np.uint64(11)).astype(_np.float64) * (1.0 / 9007199254740992.0)
        words = _np.empty(2 * raw.size, dtype=_np.uint32)
        words[0::2], words[1::2] = raw & _np.uint64(0xFFFFFFFF), raw >> _np.uint64(32)
        off = start - 2 * first
        words = words[off:off + count] >> _np.uint32(8)
        return words.astype(_np.float32) * _np.float32(1.0 / 16777216.0)


def role_default(target: Target) -> np.ndarray:
    """The standard value of a non-weight parameter (bias 0, scale 1, running_var 1, ...)."""
    value = ROLE_DEFAULTS.get(target.role, 0.0)
    return _np.full(target.shape, value, dtype=_np.dtype(target.dtype))


def validate(target: Target, value: object, source: object) -> np.ndarray:
    """Check an initializer's output: shape, a real numeric dtype, finite values."""
    arr = _np.asarray(value)
    if arr.shape != tuple(target.shape):
        raise _InitializerError(
            f"Initializer {source!r} returned shape {_fmt_shape(arr.shape)} for parameter "
            f"'{target.name}', expected {_fmt_shape(target.shape)}. "
            f"Return an array of target.shape.")
    if arr.dtype.kind not in "fiu":
        raise _InitializerError(
            f"Initializer {source!r} returned dtype {arr.dtype} for parameter '{target.name}', "
            f"expected a real number type castable to {target.dtype}.")
    arr = arr.astype(target.dtype, copy=False)
    if not _np.isfinite(arr).all():
        raise _InitializerError(
            f"Initializer {source!r} returned non-finite values (nan or inf) for parameter "
            f"'{target.name}' {_fmt_shape(target.shape)}. Check its maths for overflow or 0/0.")
    return arr
