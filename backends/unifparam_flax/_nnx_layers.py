"""Spec layers as Flax NNX modules, and where each canonical parameter lives in them.

NNX modules are built with their input size, so a spec layer whose input size is unknown
starts as a :class:`Pending` placeholder and is built by :func:`make` once its input shape
is known. Data stays channels-first (``(N, C, H, W)``) between layers: :class:`Conv2D`
transposes to NHWC around ``nnx.Conv`` and back, so ``Flatten`` flattens in torch's order.
A spec ``Sequential`` keeps its children in ``layers``: an ``nnx.List`` (canonical
``"1.0.weight"`` is the attribute path ``layers.1.layers.0.kernel``), or an ``nnx.Dict`` when
they are named (``"block 0.hidden.weight"`` is ``layers.block 0.layers.hidden.kernel``). A
custom block is a ``_nnx_blocks.BlockModule`` whose attributes are its children's names.

    >>> module = make(nn.Dense(8, activation="relu"), (2, 4), nnx.Rngs(0))   # doctest: +SKIP
    >>> module.kernel.shape                                                   # doctest: +SKIP
    (4, 8)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from unifparam import Converters, nn
from unifparam.errors import DeferredParameterError

from ._nnx_adopt import Keys, module_at
from ._nnx_blocks import BlockModule, NNXBinding


class Flippable:
    """Mixin: attributes listed in ``flipped`` hold a variable shared with another layer
    that stores the transpose of what this layer needs (a transposed or cross-layout tie)."""

    flipped: tuple[str, ...] = ()

    def _get(self, attr: str) -> Any:
        value = getattr(self, attr)[...]
        return value.T if attr in self.flipped else value


class Sequential(nnx.Module):
    """Layers in order; every layer takes ``training``. Positional children are an
    ``nnx.List``, named ones an ``nnx.Dict`` (adoption names them by position or name)."""

    positional_children = True

    def __init__(self, layers: list[nnx.Module] | dict[str, nnx.Module]):
        self.layers = nnx.Dict(layers) if isinstance(layers, dict) else nnx.List(layers)

    def child_keys(self, key: str) -> Keys:
        """Attribute path of child ``key`` (a position or a name) from this module."""
        return ("layers", key)

    def __call__(self, x: Any, training: bool = False) -> Any:
        for layer in (self.layers.values() if isinstance(self.layers, nnx.Dict)
                      else self.layers):
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

    def __init__(self, spec: nn.Dense, in_features: int, rngs: nnx.Rngs):
        super().__init__(in_features, spec.units, use_bias=spec.use_bias, rngs=rngs)
        self.activation = spec.activation

    def __call__(self, x: Any, training: bool = False) -> Any:
        kernel = self._get("kernel")
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = promote_dtype((x, kernel, bias), dtype=self.dtype)  # as nnx.Linear
        y = jnp.dot(x, kernel)
        if bias is not None:
            y = y + bias
        return NNXBinding.activation(self.activation)(y)


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
        return NNXBinding.activation(self.activation)(jnp.transpose(y, (0, 3, 1, 2)))


class Embedding(Flippable, nnx.Embed):
    """``nnx.Embed``; table ``(num_embeddings, features)``."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        (table,) = promote_dtype((self._get("embedding"),), dtype=self.dtype)
        return jnp.take(table, x, axis=0)


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
        return NNXBinding.activation(self.fn)(x)


#: spec leaf layer class -> its NNX module, from the spec, its input size and rngs
LEAVES: dict[type[nn.Layer], Callable[..., nnx.Module]] = {
    nn.Dense: lambda s, n, rngs: Dense(s, n, rngs),
    nn.Conv2D: lambda s, n, rngs: Conv2D(s, n, rngs),
    nn.BatchNorm: lambda s, n, rngs: BatchNorm(n, eps=s.eps, momentum=s.momentum, rngs=rngs),
    nn.LayerNorm: lambda s, n, rngs: LayerNorm(n, epsilon=s.eps, use_fast_variance=False,
                                               rngs=rngs),
    nn.Embedding: lambda s, n, rngs: Embedding(s.num_embeddings, s.features, rngs=rngs),
    nn.Flatten: lambda s, n, rngs: Flatten(),
    nn.Dropout: lambda s, n, rngs: Dropout(s.rate, rngs=nnx.Rngs(dropout=secrets.randbits(31))),
    nn.Activation: lambda s, n, rngs: Activation(s.name),
}
_MAKE = Converters("flax:nnx", LEAVES)


def make(spec: nn.Layer, shape: tuple[int, ...] | None, rngs: nnx.Rngs) -> nnx.Module:
    """The NNX module of a leaf ``spec`` layer with input ``shape`` (None: sizes given)."""
    n = spec.given_input_size() if shape is None else int(shape[spec.size_axis])
    return _MAKE(spec, n, rngs)


def ready(spec: nn.Layer) -> bool:
    """True if ``spec`` can be built now: every parameter size is known from its arguments."""
    return all(None not in d.shape for d in spec.param_decls())


convert = Converters("flax:nnx")


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, nnx.Module]) -> nnx.Module:
    if spec.named:
        return Sequential({key: convert.build(child, memo) for key, child in spec.children()})
    return Sequential([convert.build(child, memo) for child in spec])


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, nnx.Module]) -> nnx.Module:
    return BlockModule(spec, {key: convert.build(child, memo) for key, child in spec.children()})


@convert.register(*LEAVES)
def _leaf(spec: nn.Layer, memo: dict[int, nnx.Module]) -> nnx.Module:
    """A leaf layer, built now if its sizes are known, else a :class:`Pending` one."""
    return make(spec, None, nnx.Rngs(secrets.randbits(31))) if ready(spec) else \
        Pending(spec.kind)


def paths_of(spec: nn.Layer, module: nnx.Module) -> dict[str, Keys]:
    """The attribute path of every canonical layer path of a spec-built tree (every use of a
    shared layer): ``"block 0.hidden"`` -> ``("layers", "block 0", "layers", "hidden")``."""
    keys_of: dict[str, Keys] = {}

    def visit(layer: nn.Layer, keys: Keys, path: str) -> None:
        keys_of[path] = keys
        if not layer.children():
            return
        owner = module_at(module, keys)
        for key, child in layer.children():
            visit(child, (*keys, *owner.child_keys(key)), nn.join(path, key))

    visit(spec, (), "")
    return keys_of
