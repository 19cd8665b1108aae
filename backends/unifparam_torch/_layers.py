"""Spec layers as torch modules. Lazy (``Lazy*``) where an input size is left out.

Each module's attribute names equal the canonical parameter names, so native names of a
spec-built model are the canonical ones (``0.weight``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn as tnn
from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from unifparam import Converters, nn

_ACTIVATIONS = {
    None: lambda x: x, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "gelu": F.gelu, "softmax": lambda x: F.softmax(x, dim=-1),
}


class _Activated:
    """Mixin: apply ``self.activation`` after the layer's own forward."""

    activation: str | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ACTIVATIONS[self.activation](super().forward(x))  # type: ignore[misc]

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return super().extra_repr() + act  # type: ignore[misc]


class Dense(_Activated, tnn.Linear):
    """``nn.Linear`` with an optional activation."""

    def __init__(self, in_features: int, units: int, bias: bool, activation: str | None):
        super().__init__(in_features, units, bias=bias)
        self.activation = activation


class LazyDense(_Activated, tnn.LazyLinear):
    """``nn.LazyLinear`` that becomes :class:`Dense` once its input size is known."""

    cls_to_become = Dense

    def __init__(self, units: int, bias: bool, activation: str | None):
        super().__init__(units, bias=bias)
        self.activation = activation


class Conv2D(_Activated, tnn.Conv2d):
    def __init__(self, spec: nn.Conv2D, in_channels: int):
        super().__init__(in_channels, spec.filters, spec.kernel_size, spec.stride, spec.pads,
                         bias=spec.use_bias)
        self.activation = spec.activation


class LazyConv2D(_Activated, tnn.LazyConv2d):
    cls_to_become = Conv2D

    def __init__(self, spec: nn.Conv2D):
        super().__init__(spec.filters, spec.kernel_size, spec.stride, spec.pads,
                         bias=spec.use_bias)
        self.activation = spec.activation


class BatchNorm(_BatchNorm):
    """Batch norm over axis 1 for inputs of any rank >= 2 ((N, C) or (N, C, H, W))."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D input)")


class LazyBatchNorm(_LazyNormBase, BatchNorm):
    cls_to_become = BatchNorm


class LazyLayerNorm(LazyModuleMixin, tnn.LayerNorm):
    """``nn.LayerNorm`` over the last axis whose size is inferred (torch has no lazy one)."""

    cls_to_become = tnn.LayerNorm

    def __init__(self, eps: float):
        super().__init__(0, eps=eps)
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, input: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                n = input.shape[-1]
                self.normalized_shape = (n,)
                self.weight.materialize((n,))
                self.bias.materialize((n,))
                self.reset_parameters()


class Activation(tnn.Module):
    def __init__(self, name: str | None):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return str(self.name)


convert = Converters("torch")


def to_torch(spec: nn.Layer, memo: dict[int, tnn.Module] | None = None) -> tnn.Module:
    """The torch module for ``spec``; the same spec object always maps to the same module."""
    memo = {} if memo is None else memo
    if id(spec) not in memo:
        memo[id(spec)] = convert(spec, memo)
    return memo[id(spec)]


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, tnn.Module]) -> tnn.Module:
    return tnn.Sequential(OrderedDict((k, to_torch(c, memo)) for k, c in spec.children()))


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, tnn.Module]) -> tnn.Module:
    from ._blocks import BlockModule
    return BlockModule(spec, [(k, to_torch(c, memo)) for k, c in spec.children()], memo)


@convert.register(nn.Dense)
def _dense(spec: nn.Dense, memo: Any) -> tnn.Module:
    if spec.in_features is None:
        return LazyDense(spec.units, spec.use_bias, spec.activation)
    return Dense(spec.in_features, spec.units, spec.use_bias, spec.activation)


@convert.register(nn.Conv2D)
def _conv2d(spec: nn.Conv2D, memo: Any) -> tnn.Module:
    return LazyConv2D(spec) if spec.in_channels is None else Conv2D(spec, spec.in_channels)


@convert.register(nn.BatchNorm)
def _batchnorm(spec: nn.BatchNorm, memo: Any) -> tnn.Module:
    kw: dict[str, Any] = {"eps": spec.eps, "momentum": spec.momentum}
    return LazyBatchNorm(**kw) if spec.in_features is None else BatchNorm(spec.in_features, **kw)


@convert.register(nn.LayerNorm)
def _layernorm(spec: nn.LayerNorm, memo: Any) -> tnn.Module:
    if spec.in_features is None:
        return LazyLayerNorm(spec.eps)
    return tnn.LayerNorm(spec.in_features, eps=spec.eps)


@convert.register(nn.Embedding)
def _embedding(spec: nn.Embedding, memo: Any) -> tnn.Module:
    return tnn.Embedding(spec.num_embeddings, spec.features)


@convert.register(nn.Flatten)
def _flatten(spec: nn.Flatten, memo: Any) -> tnn.Module:
    return tnn.Flatten()


@convert.register(nn.Dropout)
def _dropout(spec: nn.Dropout, memo: Any) -> tnn.Module:
    return tnn.Dropout(spec.rate)


@convert.register(nn.Activation)
def _activation(spec: nn.Activation, memo: Any) -> tnn.Module:
    return Activation(None if spec.name == "identity" else spec.name)
