"""Spec layers as Gluon blocks, with deferred input sizes (``in_units=0``) where left out.

Gluon already stores parameters in the canonical layout (dense ``(out, in)``, conv
``(out, in, kh, kw)``, channels-first data), so values never change layout. Norm layers
name their scale and shift ``gamma``/``beta``; :data:`NATIVE_ATTR` maps canonical names.

    >>> block = to_gluon(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> block[0].weight.shape
    (8, 0)
"""

from __future__ import annotations

from typing import Any

from mxnet import autograd
from mxnet.gluon import HybridBlock
from mxnet.gluon import nn as gnn
from mxnet.ndarray import NDArray

from unifparam import Converters, nn

#: canonical local name -> Gluon attribute, per Gluon layer type with other names
NATIVE_ATTR = {"weight": "gamma", "bias": "beta"}
NORMS = (gnn.BatchNorm, gnn.LayerNorm, gnn.InstanceNorm, gnn.GroupNorm)


def activate(F: Any, x: Any, name: str | None) -> Any:  # noqa: N803 - Gluon's F
    """``name`` applied to ``x`` with Gluon's operator namespace ``F`` (nd or sym)."""
    if name is None:
        return x
    if name == "gelu":  # the erf form, as torch's and Keras' default gelu
        return F.LeakyReLU(x, act_type="gelu")
    if name == "softmax":
        return F.softmax(x, axis=-1)
    return F.Activation(x, act_type=name)  # relu, sigmoid, tanh


class Dense(gnn.Dense):
    """Gluon ``Dense`` on the last axis (``flatten=False``) with any spec activation."""

    def __init__(self, spec: nn.Dense):
        super().__init__(spec.units, use_bias=spec.use_bias, flatten=False,
                         in_units=spec.in_features or 0)
        self.act_name = spec.activation

    def hybrid_forward(self, F: Any, x: Any, weight: Any, bias: Any = None) -> Any:  # noqa: N803
        return activate(F, super().hybrid_forward(F, x, weight, bias), self.act_name)


class Conv2D(gnn.Conv2D):
    """Gluon ``Conv2D`` (NCHW) with any spec activation."""

    def __init__(self, spec: nn.Conv2D):
        super().__init__(spec.filters, spec.kernel_size, strides=spec.stride, padding=spec.pads,
                         in_channels=spec.in_channels or 0, use_bias=spec.use_bias)
        self.act_name = spec.activation

    def hybrid_forward(self, F: Any, x: Any, weight: Any, bias: Any = None) -> Any:  # noqa: N803
        return activate(F, super().hybrid_forward(F, x, weight, bias), self.act_name)


class BatchNorm(gnn.BatchNorm):
    """Batch norm over axis 1 whose running statistics follow PyTorch's convention.

    Gluon's operator moves its running statistics only in the backward pass, with the
    biased batch variance, reading momentum as the weight of the old value. Here every
    training forward updates them as the spec (and torch) do:
    ``new = (1 - m) * old + m * batch``, with the unbiased batch variance. A hybridized
    model is one symbolic graph, where no in-place update can be written: it runs
    Gluon's operator, with Gluon's convention.
    """

    def __init__(self, spec: nn.BatchNorm):
        super().__init__(axis=1, momentum=1.0 - spec.momentum, epsilon=spec.eps,
                         in_channels=spec.in_features or 0)
        self.spec_momentum = spec.momentum

    def hybrid_forward(self, F: Any, x: Any, gamma: Any, beta: Any, running_mean: Any,  # noqa: N803
                       running_var: Any) -> Any:
        if not isinstance(x, NDArray):  # a hybridized graph: Gluon's operator
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        if not autograd.is_training():
            # use_global_stats: else the operator's backward differentiates batch statistics
            return F.BatchNorm(x, gamma, beta, running_mean, running_var, eps=self._kwargs["eps"],
                               fix_gamma=False, use_global_stats=True, axis=1)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        shape = tuple(-1 if i == 1 else 1 for i in range(x.ndim))
        mean = x.mean(axis=axes)
        centered = x - mean.reshape(shape)
        var = (centered * centered).mean(axis=axes)
        y = centered / F.sqrt(var.reshape(shape) + self._kwargs["eps"])
        y = y * gamma.reshape(shape) + beta.reshape(shape)
        n = x.size // x.shape[1]
        m = self.spec_momentum
        with autograd.pause():
            running_mean[:] = (1 - m) * running_mean + m * mean
            running_var[:] = (1 - m) * running_var + m * var * (n / max(n - 1, 1))
        return y


class Activation(HybridBlock):
    """An activation on its own (``identity`` included)."""

    def __init__(self, name: str | None):
        super().__init__()
        self.act_name = name

    def hybrid_forward(self, F: Any, x: Any) -> Any:  # noqa: N803
        return activate(F, x, self.act_name)

    def __repr__(self) -> str:
        return f"Activation({self.act_name or 'identity'})"


#: spec layer -> Gluon block; a size left out stays 0 (Gluon's deferred initialization)
convert = Converters("mxnet")
to_gluon = convert.build


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, Any]) -> Any:
    kids = [(key, to_gluon(child, memo)) for key, child in spec.children()]
    # a custom block inside is a plain Block: then the container is a plain Sequential
    seq = gnn.HybridSequential() if all(isinstance(k, HybridBlock) for _, k in kids) \
        else gnn.Sequential()
    for key, kid in kids:  # named children keep their names (B3)
        seq.register_child(kid, key)
    return seq


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, Any]) -> Any:
    from ._blocks import BlockWrapper
    return BlockWrapper(spec, [(k, to_gluon(c, memo)) for k, c in spec.children()], memo)


convert.register(nn.Dense)(lambda s, memo: Dense(s))
convert.register(nn.Conv2D)(lambda s, memo: Conv2D(s))
convert.register(nn.BatchNorm)(lambda s, memo: BatchNorm(s))
convert.register(nn.LayerNorm)(lambda s, memo: gnn.LayerNorm(
    axis=-1, epsilon=s.eps, in_channels=s.in_features or 0))
convert.register(nn.Embedding)(lambda s, memo: gnn.Embedding(s.num_embeddings, s.features))
convert.register(nn.Flatten)(lambda s, memo: gnn.Flatten())
convert.register(nn.Dropout)(lambda s, memo: gnn.Dropout(s.rate))
convert.register(nn.Activation)(
    lambda s, memo: Activation(None if s.name == "identity" else s.name))


def native_attr(block: HybridBlock, local: str) -> str:
    """The Gluon attribute holding canonical parameter ``local`` of ``block``."""
    return NATIVE_ATTR.get(local, local) if isinstance(block, NORMS) else local
