"""Spec layers as linen modules, and the canonical <-> native layout of their parameters.

Data stays channels-first (``(N, C, H, W)``) between layers: ``Conv2D`` transposes to NHWC
around ``flax.linen.Conv`` and back, so ``Flatten`` flattens in (C, H, W) order as in torch.
A spec ``Sequential`` names its children ``layers_<i>`` (like ``flax.linen.Sequential``), so
canonical ``"0.1.weight"`` is the pytree path ``('params', 'layers_0', 'layers_1', 'kernel')``.

    >>> module = convert.build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> variables = module.init(jax.random.key(0), jnp.ones((2, 4)))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen

from unifparam import Converters, nn
from unifparam.backend import kernel_perm

from ._blocks import BlockModule, FlaxBinding, _Spec


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
        return FlaxBinding.activation(self.activation)(super().__call__(x))


class Conv2D(linen.Conv):
    """``flax.linen.Conv`` on channels-first inputs; kernel ``(kh, kw, in, out)``."""

    activation: str | None = None

    def __call__(self, x: Any, training: bool = False) -> Any:
        y = super().__call__(jnp.transpose(x, (0, 2, 3, 1)))
        return FlaxBinding.activation(self.activation)(jnp.transpose(y, (0, 3, 1, 2)))


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
        return FlaxBinding.activation(self.fn)(x)


convert = Converters("flax")


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, linen.Module]) -> linen.Module:
    return Sequential(tuple(convert.build(child, memo) for child in spec))


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, linen.Module]) -> linen.Module:
    return BlockModule(_Spec(spec), tuple(convert.build(child, memo)
                                          for _, child in spec.children()))


convert.register(nn.Dense)(lambda s, memo: Dense(s.units, use_bias=s.use_bias,
                                                  activation=s.activation))
convert.register(nn.Conv2D)(lambda s, memo: Conv2D(
    s.filters, s.kernel_size, strides=(s.stride, s.stride),
    padding=tuple((p, p) for p in s.pads), use_bias=s.use_bias, activation=s.activation))
convert.register(nn.BatchNorm)(lambda s, memo: BatchNorm(axis=1, momentum=1.0 - s.momentum,
                                                         epsilon=s.eps))
convert.register(nn.LayerNorm)(lambda s, memo: LayerNorm(epsilon=s.eps,
                                                         use_fast_variance=False))
convert.register(nn.Embedding)(lambda s, memo: Embedding(s.num_embeddings, s.features))
convert.register(nn.Flatten)(lambda s, memo: Flatten())
convert.register(nn.Dropout)(lambda s, memo: Dropout(s.rate))
convert.register(nn.Activation)(lambda s, memo: Activation(s.name))


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


def layout_of(leaf: str, family: str, axes: tuple[str, ...] | None) -> str:
    """The layout of a native leaf: a kernel whose axes are known is a Dense's ``(in, out)``
    or a convolution's ``(*kernel, in, out)``; everything else is stored as is."""
    if leaf != "kernel" or axes is None:
        return "plain"
    return "conv" if family == "conv" else "dense"


def layout_perm(layout: str, ndim: int, to_native: bool) -> tuple[int, ...] | None:
    """The axes permutation from canonical to native layout, or back (None: the same)."""
    if (layout == "dense" and ndim == 2) or (layout == "conv" and ndim >= 3):
        return kernel_perm(ndim, to_native)
    return None


def relayout(layout: str, value: Any, to_native: bool = False) -> Any:
    """A native value (numpy or jax array, or a shape tuple) in canonical layout (Dense
    ``(in, out)`` -> ``(out, in)``), or a canonical one in native layout."""
    ndim = len(value) if isinstance(value, tuple) else value.ndim
    return permute(value, layout_perm(layout, ndim, to_native))


def permute(value: Any, perm: tuple[int, ...] | None) -> Any:
    """``value`` (an array or a shape tuple) with its axes in the order ``perm`` (None: as is)."""
    if perm is None:
        return value
    return tuple(value[i] for i in perm) if isinstance(value, tuple) else value.transpose(perm)


def default_init(module: Any, collection: str, leaf: str) -> Callable[..., Any] | None:
    """Flax's own default initializer of ``module``'s leaf (None if unknown).

    >>> default_init(linen.Dense(3), "params", "bias")   # flax's zeros   # doctest: +SKIP
    """
    if collection == "batch_stats" and (module is None or isinstance(module, linen.BatchNorm)):
        return _BY_LEAF.get(leaf)
    if collection != "params" or leaf not in ("kernel", "bias", "embedding", "scale"):
        return None
    if module is None:  # a compact submodule not bound yet: linen's defaults for that leaf
        return _BY_LEAF[leaf]
    return getattr(module, f"{leaf}_init", None)  # its kernel_init, bias_init, ...


#: linen's default initializer per leaf name (Dense, Conv, DenseGeneral, Embed, norms).
_BY_LEAF: dict[str, Callable[..., Any]] = {
    "kernel": linen.initializers.lecun_normal(), "bias": linen.initializers.zeros,
    "scale": linen.initializers.ones, "mean": linen.initializers.zeros,
    "var": linen.initializers.ones,
    "embedding": linen.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0),
}
