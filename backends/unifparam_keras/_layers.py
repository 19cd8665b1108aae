"""Spec layers as Keras layers, and the views that make a layer read another's variable.

Leaf layers are named by their canonical path, so a spec model's Keras variable paths are
``0/kernel``, ``0_1_0/bias``. A spec object used twice is one Keras layer called twice.
Data stays channels-first (N, C, H, W), as the spec says.

    >>> to_keras(nn.Sequential(nn.Dense(4)))[0]          # doctest: +SKIP
    (<Stack name=sequential>, {'': <Stack ...>, '0': <Dense name=0>})
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from unifparam import Converters, nn

from ._adopt import Ref


@keras.saving.register_keras_serializable(package="unifparam")
def gelu_exact(x: Any) -> Any:
    """GELU with erf, as torch's default (Keras's default is the tanh approximation)."""
    return keras.activations.gelu(x, approximate=False)


#: spec activation -> Keras's own name (or the registered gelu_exact), so that the layers
#: serialize; KerasBinding.activation's plain functions (identity, exact gelu) would not
_ACTIVATIONS: dict[str | None, Any] = {
    None: None, "identity": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
    "gelu": gelu_exact, "softmax": "softmax",
}


class Stack(keras.Model):
    """Layers called in order; a layer listed twice is one layer called twice (shared)."""

    def __init__(self, layers: list[keras.layers.Layer], **kwargs: Any):
        super().__init__(**kwargs)
        self.stack = list(layers)

    def build(self, input_shape: Any = None) -> None:
        self.built = True  # the adapter builds every leaf with its own input shape

    def positional_children(self) -> list[keras.layers.Layer]:
        """Children by position, as a spec Sequential names them (adoption reads this)."""
        return list(self.stack)

    def call(self, x: Any, training: bool | None = None) -> Any:
        for layer in self.stack:
            x = layer(x, training=training)
        return x


class Conv2D(keras.layers.Conv2D):
    """Conv2D on channels-first data (N, C, H, W) with explicit symmetric padding ``pads``
    (torch's ``padding``).

    It computes channels-last inside, on every Keras backend: TensorFlow has no NCHW
    convolution on the CPU in eager mode (``UnimplementedError``), and only some graph
    rewrites made it run before. The kernel layout ``(kh, kw, in, out)`` is the same.
    """

    def __init__(self, *args: Any, pads: tuple[int, int] = (0, 0), **kwargs: Any):
        super().__init__(*args, data_format="channels_last", **kwargs)
        self.pads = tuple(pads)

    def build(self, input_shape: Any) -> None:
        n, c, h, w = input_shape
        super().build((n, h, w, c))
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={1: c})

    def call(self, inputs: Any) -> Any:
        p, q = self.pads
        x = ops.pad(inputs, ((0, 0), (0, 0), (p, p), (q, q))) if p or q else inputs
        y = super().call(ops.transpose(x, (0, 2, 3, 1)))
        return ops.transpose(y, (0, 3, 1, 2))

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, c, h, w = input_shape
        p, q = self.pads
        n, h2, w2, f = super().compute_output_shape(
            (n, None if h is None else h + 2 * p, None if w is None else w + 2 * q, c))
        return (n, f, h2, w2)

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "pads": self.pads}
        config.pop("data_format", None)
        return config


class BatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization over axis 1 for inputs of any rank >= 2, with torch's training
    update (running variance from the unbiased batch variance)."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None  # built from (None, C) when sizes are given: any rank works

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable):
            return super().call(inputs, training=False)
        axes = [i for i in range(len(inputs.shape)) if i != 1]
        shape = [1 if i in axes else -1 for i in range(len(inputs.shape))]
        mean, var = ops.moments(inputs, axes)
        n = ops.cast(ops.size(inputs) // ops.shape(inputs)[1], var.dtype)
        m = 1.0 - self.momentum
        self.moving_mean.assign(self.moving_mean * (1.0 - m) + mean * m)
        self.moving_variance.assign(self.moving_variance * (1.0 - m) + var * n / (n - 1) * m)
        y = (inputs - ops.reshape(mean, shape)) * ops.reshape(
            ops.rsqrt(var + self.epsilon), shape)
        return y * ops.reshape(self.gamma, shape) + ops.reshape(self.beta, shape)


class LayerNorm(keras.layers.LayerNormalization):
    """LayerNormalization over the last axis that accepts any leading dimensions."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None


def to_keras(spec: nn.Layer) -> tuple[Any, dict[str, Any]]:
    """The Keras layer for ``spec`` and a table path -> Keras layer (every use's path)."""
    memo: dict[int, Any] = {}
    root = convert.build(spec, memo, "")
    return root, {path: memo[id(layer)] for path, layer in nn.uses(spec)}


convert = Converters("keras")


def _name(path: str) -> str:
    return path.replace(".", "_") or "sequential"  # torch-backed Keras forbids dots in names


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, Any], path: str) -> Any:
    kids = [convert.build(c, memo, nn.join(path, k)) for k, c in spec.children()]
    return Stack(kids, name=_name(path))


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, Any], path: str) -> Any:
    from ._blocks import BlockLayer
    kids = [convert.build(c, memo, nn.join(path, k)) for k, c in spec.children()]
    return BlockLayer(spec, kids, memo, name=_name(path) if path else "block")


def _leaf(make: Callable[[Any, str], Any],
          input_shape: Callable[[Any], nn.Shape | None] = lambda spec: None,
          ) -> Callable[..., Any]:
    """The converter of a leaf kind: ``make(spec, name)``, named after its path, built now
    when the spec gives its ``input_shape`` (L6); else the layer waits (L1)."""
    def converter(spec: Any, memo: Any, path: str) -> Any:
        layer, shape = make(spec, _name(path)), input_shape(spec)
        if shape is not None:
            layer.build(shape)
        return layer
    return converter


def _sized(*rest: None) -> Callable[[Any], nn.Shape | None]:
    """Inputs ``(batch, n, *rest)`` with the input size ``n`` the spec gives; None while it
    leaves that size to inference."""
    def input_shape(spec: nn.Layer) -> nn.Shape | None:
        n = spec.given_input_size()
        return None if n is None else (None, n, *rest)
    return input_shape


convert.register(nn.Dense)(_leaf(lambda s, name: keras.layers.Dense(
    s.units, activation=_ACTIVATIONS[s.activation], use_bias=s.use_bias, name=name),
    _sized()))
convert.register(nn.Conv2D)(_leaf(lambda s, name: Conv2D(
    s.filters, s.kernel_size, strides=s.stride, padding="valid",
    activation=_ACTIVATIONS[s.activation], use_bias=s.use_bias, pads=s.pads, name=name),
    _sized(None, None)))
convert.register(nn.BatchNorm)(_leaf(lambda s, name: BatchNorm(
    axis=1, momentum=1.0 - s.momentum, epsilon=s.eps, name=name), _sized()))
convert.register(nn.LayerNorm)(_leaf(lambda s, name: LayerNorm(
    axis=-1, epsilon=s.eps, name=name), _sized()))
convert.register(nn.Embedding)(_leaf(lambda s, name: keras.layers.Embedding(
    s.num_embeddings, s.features, name=name), lambda s: (None,)))  # every size is known
convert.register(nn.Flatten)(_leaf(lambda s, name: keras.layers.Flatten(
    data_format="channels_last", name=name)))  # flattens (C, H, W) in that order
convert.register(nn.Dropout)(_leaf(lambda s, name: keras.layers.Dropout(s.rate, name=name)))
convert.register(nn.Activation)(_leaf(lambda s, name: keras.layers.Activation(
    _ACTIVATIONS[s.name] or "linear", name=name)))


# ---- views: a tied parameter reads its root's variable at call time ----------------------
def view(dst: Ref, src: Ref, transpose: bool) -> Any:
    """What ``dst``'s layer reads: ``src`` (transposed if asked) in ``dst``'s native layout.

    Returns ``src``'s current object itself when no axis moves (so assign() still works).
    """
    ndim = len(src.own().shape)
    axes = list(src.perm or range(ndim))
    if transpose:
        axes.reverse()
    if dst.native_perm is not None:
        axes = [axes[i] for i in dst.native_perm]
    value = getattr(src.layer, src.attr)
    return value if axes == list(range(ndim)) else ops.transpose(value, axes)


@functools.cache
def _view_class(cls: type, attrs: frozenset[str]) -> type:
    """A subclass of ``cls`` whose ``attrs`` are read through the layer's links (one class
    per pair, made once)."""
    body: dict[str, Any] = {
        a: property(lambda self, a=a: view(*vars(self)["_unifparam_links"][a])) for a in attrs}
    body.update(__module__=cls.__module__, __qualname__=cls.__qualname__)
    return type(cls.__name__, (cls,), body)


def link(dst: Ref, src: Ref, transpose: bool) -> None:
    """Make ``dst``'s layer read ``src`` (idempotent); its own variable is untracked.

    Keras 3 has no public way to share a variable between two layers
    (https://github.com/keras-team/keras/issues/18821), so the layer's class is swapped for
    a same-named subclass whose attribute reads the link, as torch's parametrizations do.
    """
    layer = dst.layer
    links = vars(layer).setdefault("_unifparam_links", {})
    links[dst.attr] = (dst, src, transpose)
    base = vars(layer).setdefault("_unifparam_base", type(layer))
    layer.__class__ = _view_class(base, frozenset(links))
    own = dst.own()
    if own is not None and any(v is own for v in layer._trainable_variables
                               + layer._non_trainable_variables):
        layer._untrack_variable(own)
