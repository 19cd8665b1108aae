"""Spec layers as torch modules. Lazy (``Lazy*``) where an input size is left out.

Each module's attribute names equal the canonical parameter names, so native names of a
spec-built model are the canonical ones (``0.weight``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn as tnn
from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from unifparam import Converters, nn

from ._blocks import BlockModule, TorchBinding


class _Activated:
    """Mixin: apply ``self.activation`` after the layer's own forward."""

    activation: str | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return TorchBinding.activation(self.activation)(super().forward(x))  # type: ignore[misc]

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation else ""
        return super().extra_repr() + act  # type: ignore[misc]


class Dense(_Activated, tnn.Linear):
    """``nn.Linear`` with an optional activation."""

    def __init__(self, spec: nn.Dense, in_features: int):
        super().__init__(in_features, spec.units, bias=spec.use_bias)
        self.activation = spec.activation


class LazyDense(_Activated, tnn.LazyLinear):
    """``nn.LazyLinear`` that becomes :class:`Dense` once its input size is known."""

    cls_to_become = Dense

    def __init__(self, spec: nn.Dense):
        super().__init__(spec.units, bias=spec.use_bias)
        self.activation = spec.activation


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
        return TorchBinding.activation(self.name)(x)

    def extra_repr(self) -> str:
        return str(self.name)


#: spec layer -> torch module; a size left out (None) makes the lazy module
convert = Converters("torch")
to_torch = convert.build


@convert.register(nn.Sequential)
def _sequential(spec: nn.Sequential, memo: dict[int, tnn.Module]) -> tnn.Module:
    return tnn.Sequential(OrderedDict((k, to_torch(c, memo)) for k, c in spec.children()))


@convert.register(nn.Block)
def _block(spec: nn.Block, memo: dict[int, tnn.Module]) -> tnn.Module:
    return BlockModule(spec, [(k, to_torch(c, memo)) for k, c in spec.children()], memo)


def _sized(lazy: type, eager: type) -> Callable[[Any, Any], tnn.Module]:
    """The converter making ``eager(spec, n)`` with the input size ``n`` the spec gives, or
    ``lazy(spec)`` while it leaves that size to inference."""
    def converter(spec: nn.Layer, memo: Any) -> tnn.Module:
        n = spec.given_input_size()
        return lazy(spec) if n is None else eager(spec, n)
    return converter


convert.register(nn.Dense)(_sized(LazyDense, Dense))
convert.register(nn.Conv2D)(_sized(LazyConv2D, Conv2D))
convert.register(nn.BatchNorm)(_sized(
    lambda s: LazyBatchNorm(eps=s.eps, momentum=s.momentum),
    lambda s, n: BatchNorm(n, eps=s.eps, momentum=s.momentum)))
convert.register(nn.LayerNorm)(_sized(lambda s: LazyLayerNorm(s.eps),
                                      lambda s, n: tnn.LayerNorm(n, eps=s.eps)))
convert.register(nn.Embedding)(lambda s, memo: tnn.Embedding(s.num_embeddings, s.features))
convert.register(nn.Flatten)(lambda s, memo: tnn.Flatten())
convert.register(nn.Dropout)(lambda s, memo: tnn.Dropout(s.rate))
convert.register(nn.Activation)(lambda s, memo: Activation(s.name))
