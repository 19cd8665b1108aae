"""Spec layers as Flax NNX modules, and where each canonical parameter lives in them.

NNX modules are built with their input size, so a spec layer whose input size is unknown
starts as a :class:`Pending` placeholder and is built by :func:`make` once its input shape
is known. Data stays channels-first (``(N, C, H, W)``) between layers: :class:`Conv2D`
transposes to NHWC around ``nnx.Conv`` and back, so ``Flatten`` flattens in torch's order.
A spec ``Sequential`` keeps its children in ``layers`` (an ``nnx.List``): canonical
``"1.0.weight"`` is the attribute path ``layers.1.layers.0.kernel``.

    >>> module = make(nn.Dense(8, activation="relu"), (2, 4), nnx.Rngs(0))   # doctest: +SKIP
    >>> module.kernel.shape                                                   # doctest: +SKIP
    (4, 8)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from unifparam import nn
from unifparam.errors import DeferredParameterError

ACTIVATIONS: dict[str | None, Callable[[Any], Any]] = {
    None: lambda x: x, "identity": lambda x: x, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}

#: spec kind -> canonical local name -> (native attribute, layout)
SPEC_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "Dense": {"weight": ("kernel", "dense"), "bias": ("bias", "plain")},
    "Conv2D": {"weight": ("kernel", "conv"), "bias": ("bias", "plain")},
    "Embedding": {"weight": ("embedding", "plain")},
    "LayerNorm": {"weight": ("scale", "plain"), "bias": ("bias", "plain")},
    "BatchNorm": {"weight": ("scale", "plain"), "bias": ("bias", "plain"),
                  "running_mean": ("mean", "plain"), "running_var": ("var", "plain")},
}


class Flippable:
    """Mixin: attributes listed in ``flipped`` hold a variable shared with another layer
    that stores the transpose of what this layer needs (a transposed or cross-layout tie)."""

    flipped: tuple[str, ...] = ()

    def _get(self, attr: str) -> Any:
        value = getattr(self, attr)[...]
        return value.T if attr in self.flipped else value


class Sequential(nnx.Module):
    """Layers in order; every layer takes ``training``. Adoption names them by position."""

    positional_children = True

    def __init__(self, layers: list[nnx.Module]):
        self.layers = nnx.List(layers)

    def __call__(self, x: Any, training: bool = False) -> Any:
        for layer in self.layers:
            x = layer(x, training=training)
        return x


class Pending(nnx.Module):
    """A spec layer whose input size is not known yet: no parameters, cannot run."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x: Any, training: bool = False) -> Any:
        raise DeferredParameterError(f"{self.kind} layer has no parameters yet: call "
                                     f"unifparam.materialize(net, X) first.")


class Dense(Flippable, nnx.Linear):
    """``nnx.Linear`` with an optional activation; kernel ``(in, out)``."""

    def __init__(self, in_features: int, units: int, *, use_bias: bool,
                 activation: str | None, rngs: nnx.Rngs):
        super().__init__(in_features, units, use_bias=use_bias, rngs=rngs)
        self.activation = activation

    def __call__(self, x: Any, training: bool = False) -> Any:
        y = jnp.dot(x, self._get("kernel"))
        if self.bias is not None:
            y = y + self.bias[...]
        return ACTIVATIONS[self.activation](y)


class Conv2D(nnx.Conv):
    """``nnx.Conv`` on channels-first inputs; kernel ``(kh, kw, in, out)``."""

    def __init__(self, spec: nn.Conv2D, in_channels: int, rngs: nnx.Rngs):
        p0, p1 = spec.pads
        super().__init__(in_channels, spec.filters, spec.kernel_size,
                         strides=(spec.stride, spec.stride), padding=((p0, p0), (p1, p1)),
                         use_bias=spec.use_bias, rngs=rngs)
        self.activation = spec.activation

    def __call__(self, x: Any, training: bool = False) -> Any:
        y = super().__call__(jnp.transpose(x, (0, 2, 3, 1)))
        return ACTIVATIONS[self.activation](jnp.transpose(y, (0, 3, 1, 2)))


class Embedding(Flippable, nnx.Embed):
    """``nnx.Embed``; table ``(num_embeddings, features)``."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        return jnp.take(self._get("embedding"), x, axis=0)


class LayerNorm(nnx.LayerNorm):
    """Layer norm over the last axis (torch's biased variance)."""

    def __call__(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        return super().__call__(x)


class BatchNorm(nnx.BatchNorm):
    """Batch norm over axis 1 with PyTorch's conventions: ``momentum`` is the weight of the
    batch statistic, running variance is updated with the unbiased batch variance, and
    training normalizes with the biased one."""

    def __init__(self, num_features: int, *, eps: float, momentum: float, rngs: nnx.Rngs):
        super().__init__(num_features, axis=1, epsilon=eps, momentum=momentum, rngs=rngs)

    def __call__(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        axes = tuple(i for i in range(x.ndim) if i != 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean.reshape(shape)), axis=axes)
            n = x.size // x.shape[1]
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * mean
            self.var[...] = (1 - m) * self.var[...] + m * var * (n / max(n - 1, 1))
        else:
            mean, var = self.mean[...], self.var[...]
        y = (x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + self.epsilon)
        return y * self.scale[...].reshape(shape) + self.bias[...].reshape(shape)


class Dropout(nnx.Dropout):
    """Dropout, active only with ``training=True``."""

    def __call__(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        return super().__call__(x, deterministic=not training)


class Flatten(nnx.Module):
    """Flattens everything after the batch axis, channels-first order."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        return jnp.reshape(x, (x.shape[0], -1))


class Activation(nnx.Module):
    """An activation on its own."""

    def __init__(self, name: str | None):
        self.fn = name

    def __call__(self, x: Any, training: bool = False) -> Any:
        return ACTIVATIONS[self.fn](x)


def input_size(spec: nn.Layer, shape: tuple[int, ...]) -> int:
    """The input size an NNX layer for ``spec`` is built with, from its input shape."""
    if isinstance(spec, nn.Conv2D | nn.BatchNorm):
        return int(shape[1])
    return int(shape[-1])


def make(spec: nn.Layer, shape: tuple[int, ...] | None, rngs: nnx.Rngs) -> nnx.Module:
    """The NNX module of a leaf ``spec`` layer with input ``shape`` (None: sizes given)."""
    if isinstance(spec, nn.Dense):
        n = spec.in_features if shape is None else input_size(spec, shape)
        return Dense(n, spec.units, use_bias=spec.use_bias, activation=spec.activation,
                     rngs=rngs)
    if isinstance(spec, nn.Conv2D):
        n = spec.in_channels if shape is None else input_size(spec, shape)
        return Conv2D(spec, n, rngs)
    if isinstance(spec, nn.BatchNorm):
        n = spec.in_features if shape is None else input_size(spec, shape)
        return BatchNorm(n, eps=spec.eps, momentum=spec.momentum, rngs=rngs)
    if isinstance(spec, nn.LayerNorm):
        n = spec.in_features if shape is None else input_size(spec, shape)
        return LayerNorm(n, epsilon=spec.eps, use_fast_variance=False, rngs=rngs)
    if isinstance(spec, nn.Embedding):
        return Embedding(spec.num_embeddings, spec.features, rngs=rngs)
    if isinstance(spec, nn.Flatten):
        return Flatten()
    if isinstance(spec, nn.Dropout):
        return Dropout(spec.rate, rngs=nnx.Rngs(dropout=secrets.randbits(31)))
    if isinstance(spec, nn.Activation):
        return Activation(None if spec.name == "identity" else spec.name)
    raise TypeError(f"The flax:nnx backend has no conversion for {type(spec).__name__}.")


def ready(spec: nn.Layer) -> bool:
    """True if ``spec`` can be built now: every parameter size is known from its arguments."""
    return all(None not in d.shape for d in spec.param_decls())


def to_nnx(spec: nn.Layer, memo: dict[int, nnx.Module] | None = None) -> nnx.Module:
    """The NNX module tree of ``spec``: layers of unknown input size are :class:`Pending`.

    The same spec object always maps to the same module (one module used twice).
    """
    memo = {} if memo is None else memo
    if isinstance(spec, nn.Block):
        from unifparam.errors import UnsupportedError
        raise UnsupportedError(f"The flax:nnx backend cannot build custom blocks "
                               f"({type(spec).__name__}) yet; torch, keras, flax (linen) "
                               f"and mxnet can.")
    if id(spec) not in memo:
        if isinstance(spec, nn.Sequential):
            memo[id(spec)] = Sequential([to_nnx(child, memo) for child in spec])
        elif ready(spec):
            memo[id(spec)] = make(spec, None, nnx.Rngs(secrets.randbits(31)))
        else:
            memo[id(spec)] = Pending(spec.kind)
    return memo[id(spec)]


def keys_of(path: str) -> tuple[str, ...]:
    """Attribute path of the spec layer at canonical ``path``: ``"1.0"`` -> layers.1.layers.0."""
    out: tuple[str, ...] = ()
    for part in filter(None, path.split(".")):
        out += ("layers", part)
    return out


def replace(root: nnx.Module, old: nnx.Module, new: nnx.Module) -> nnx.Module:
    """Put ``new`` wherever ``old`` is used in a spec-built tree; the (new) root."""
    if root is old:
        return new
    if isinstance(root, Sequential):
        for i, child in enumerate(root.layers):
            if child is old:
                root.layers[i] = new
            else:
                replace(child, old, new)
    return root
