"""Spec layers as linen modules, and the canonical <-> native layout of their parameters.

Data stays channels-first (``(N, C, H, W)``) between layers: ``Conv2D`` transposes to NHWC
around ``flax.linen.Conv`` and back, so ``Flatten`` flattens in (C, H, W) order as in torch.
A spec ``Sequential`` names its children ``layers_<i>`` (like ``flax.linen.Sequential``), so
canonical ``"0.1.weight"`` is the pytree path ``('params', 'layers_0', 'layers_1', 'kernel')``.

    >>> module = to_flax(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> variables = module.init(jax.random.key(0), jnp.ones((2, 4)))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen

from unifparam import Converters, nn
from unifparam._buffers import kernel_perm

Path = tuple[str, ...]

ACTIVATIONS: dict[str | None, Callable[[Any], Any]] = {
    None: lambda x: x, "identity": lambda x: x, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}


class Sequential(linen.Module):
    """Layers in order; every layer takes ``training`` (children are named ``layers_<i>``)."""

    layers: Sequence[linen.Module]

    def __call__(self, x: Any, training: bool = False) -> Any:
        for layer in self.layers:
            x = layer(x, training=training)
        return x


class Dense(linen.Dense):
    """``flax.linen.Dense`` with an optional activation; kernel ``(in, out)``."""

    activation: str | None = None

    def __call__(self, x: Any, training: bool = False) -> Any:
        return ACTIVATIONS[self.activation](super().__call__(x))


class Conv2D(linen.Conv):
    """``flax.linen.Conv`` on channels-first inputs; kernel ``(kh, kw, in, out)``."""

    activation: str | None = None

    def __call__(self, x: Any, training: bool = False) -> Any:
        y = super().__call__(jnp.transpose(x, (0, 2, 3, 1)))
        return ACTIVATIONS[self.activation](jnp.transpose(y, (0, 3, 1, 2)))


class Embedding(linen.Embed):
    """``flax.linen.Embed``; table ``(num_embeddings, features)``."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        return super().__call__(x)


class LayerNorm(linen.LayerNorm):
    """Layer norm over the last axis."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        return super().__call__(x)


class BatchNorm(linen.BatchNorm):
    """Batch norm over axis 1; running statistics in ``batch_stats``, used unless training.

    Training updates the running variance from the unbiased batch variance, as PyTorch
    does (linen uses the biased one): one convention on every backend.
    """

    def __call__(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        y = super().__call__(x, use_running_average=not training)
        if training and not self.is_initializing() and self.is_mutable_collection("batch_stats"):
            axes = tuple(i for i in range(x.ndim) if i != 1)
            n = x.size // x.shape[1]
            biased = jnp.var(x.astype(jnp.float32), axis=axes)
            var = self.get_variable("batch_stats", "var")
            self.put_variable("batch_stats", "var",
                              var + (1.0 - self.momentum) * biased / max(n - 1, 1))
        return y


class Dropout(linen.Dropout):
    """Dropout, active only with ``training=True`` (needs the ``dropout`` rng then)."""

    def __call__(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        return super().__call__(x, deterministic=not training)


class Flatten(linen.Module):
    """Flattens everything after the batch axis, channels-first order."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        return jnp.reshape(x, (x.shape[0], -1))


class Activation(linen.Module):
    """An activation on its own."""

    fn: str | None = None

    def __call__(self, x: Any, training: bool = False) -> Any:
        return ACTIVATIONS[self.fn](x)


convert = Converters("flax")


def to_flax(spec: nn.Layer, memo: dict[int, linen.Module] | None = None) -> linen.Module:
    """The linen module for ``spec``; the same spec object always maps to the same module."""
    memo = {} if memo is None else memo
    if id(spec) not in memo:
        memo[id(spec)] = convert(spec, memo)
    return memo[id(spec)]


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, linen.Module]) -> linen.Module:
    return Sequential(tuple(to_flax(child, memo) for child in spec))


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, linen.Module]) -> linen.Module:
    from ._blocks import BlockModule, _Spec
    return BlockModule(_Spec(spec), tuple(to_flax(child, memo) for _, child in spec.children()))


@convert.register(nn.Dense)
def _dense(spec: nn.Dense, memo: Any) -> linen.Module:
    return Dense(spec.units, use_bias=spec.use_bias, activation=spec.activation)


@convert.register(nn.Conv2D)
def _conv2d(spec: nn.Conv2D, memo: Any) -> linen.Module:
    p0, p1 = spec.pads
    return Conv2D(spec.filters, spec.kernel_size, strides=(spec.stride, spec.stride),
                  padding=((p0, p0), (p1, p1)), use_bias=spec.use_bias,
                  activation=spec.activation)


@convert.register(nn.BatchNorm)
def _batchnorm(spec: nn.BatchNorm, memo: Any) -> linen.Module:
    return BatchNorm(axis=1, momentum=1.0 - spec.momentum, epsilon=spec.eps)


@convert.register(nn.LayerNorm)
def _layernorm(spec: nn.LayerNorm, memo: Any) -> linen.Module:
    return LayerNorm(epsilon=spec.eps, use_fast_variance=False)


@convert.register(nn.Embedding)
def _embedding(spec: nn.Embedding, memo: Any) -> linen.Module:
    return Embedding(spec.num_embeddings, spec.features)


@convert.register(nn.Flatten)
def _flatten(spec: nn.Flatten, memo: Any) -> linen.Module:
    return Flatten()


@convert.register(nn.Dropout)
def _dropout(spec: nn.Dropout, memo: Any) -> linen.Module:
    return Dropout(spec.rate)


@convert.register(nn.Activation)
def _activation(spec: nn.Activation, memo: Any) -> linen.Module:
    return Activation(None if spec.name == "identity" else spec.name)


# ---- where each canonical parameter lives, and in which layout -------------------------------
#: spec kind -> canonical local name -> (collection, native leaf name, layout)
SPEC_PARAMS: dict[str, dict[str, tuple[str, str, str]]] = {
    "Dense": {"weight": ("params", "kernel", "dense"), "bias": ("params", "bias", "plain")},
    "Conv2D": {"weight": ("params", "kernel", "conv"), "bias": ("params", "bias", "plain")},
    "Embedding": {"weight": ("params", "embedding", "plain")},
    "LayerNorm": {"weight": ("params", "scale", "plain"), "bias": ("params", "bias", "plain")},
    "BatchNorm": {"weight": ("params", "scale", "plain"), "bias": ("params", "bias", "plain"),
                  "running_mean": ("batch_stats", "mean", "plain"),
                  "running_var": ("batch_stats", "var", "plain")},
}


def _perm(layout: str, ndim: int, to_native: bool) -> tuple[int, ...] | None:
    if (layout == "dense" and ndim == 2) or (layout == "conv" and ndim >= 3):
        return kernel_perm(ndim, to_native)
    return None


def canonical_perm(layout: str, ndim: int) -> tuple[int, ...] | None:
    """The axes permutation from native to canonical layout (None: the same)."""
    return _perm(layout, ndim, to_native=False)


def to_canonical(layout: str, value: Any) -> Any:
    """A native leaf (numpy or jax) in canonical layout: Dense ``(in, out)`` -> ``(out, in)``."""
    perm = _perm(layout, value.ndim, to_native=False)
    return value if perm is None else value.transpose(perm)


def native_perm(layout: str, ndim: int) -> tuple[int, ...] | None:
    """The axes permutation from canonical to native layout (None: the same)."""
    return _perm(layout, ndim, to_native=True)


def to_native(layout: str, value: Any) -> Any:
    """A canonical value in the native layout (inverse of :func:`to_canonical`)."""
    perm = native_perm(layout, value.ndim)
    return value if perm is None else value.transpose(perm)


def shape_to_native(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    perm = _perm(layout, len(shape), to_native=True)
    return shape if perm is None else tuple(shape[i] for i in perm)


def shape_to_canonical(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    perm = _perm(layout, len(shape), to_native=False)
    return tuple(shape) if perm is None else tuple(shape[i] for i in perm)


_INIT_ATTR = {"kernel": "kernel_init", "bias": "bias_init", "embedding": "embedding_init",
              "scale": "scale_init"}


def default_init(module: Any, collection: str, leaf: str) -> Callable[..., Any] | None:
    """Flax's own default initializer of ``module``'s leaf (None if unknown).

    >>> default_init(linen.Dense(3), "params", "bias")   # flax's zeros   # doctest: +SKIP
    """
    if collection == "batch_stats" and (module is None or isinstance(module, linen.BatchNorm)):
        return _BY_LEAF.get(leaf)
    attr = _INIT_ATTR.get(leaf)
    if collection != "params" or attr is None:
        return None
    if module is None:  # a compact submodule not bound yet: linen's defaults for that leaf
        return _BY_LEAF.get(leaf)
    return getattr(module, attr, None)


#: linen's default initializer per leaf name (Dense, Conv, DenseGeneral, Embed, norms).
_BY_LEAF: dict[str, Callable[..., Any]] = {
    "kernel": linen.initializers.lecun_normal(), "bias": linen.initializers.zeros,
    "scale": linen.initializers.ones, "mean": linen.initializers.zeros,
    "var": linen.initializers.ones,
    "embedding": linen.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0),
}
