"""unifparam blocks as torch modules: the block's forward runs on torch tensors.

A block becomes a :class:`BlockModule` holding its children as submodules and its own
parameters as ``nn.Parameter`` s (uninitialized while a size is unknown); its ``forward``
calls the block's own ``forward`` with a binding: spec layers called there run as their
torch modules, ``self.weight`` is the torch parameter, :mod:`unifparam.ops` use torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat.torch
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from torch import nn as tnn
from torch.nn.parameter import UninitializedParameter

from unifparam import nn
from unifparam.backend import Binding, bound
from unifparam.errors import SpecError

#: what the array API standard leaves out (the rest is ``array_api_compat.torch``)
OPS: dict[str, Callable[..., Any]] = {
    "relu": F.relu, "sigmoid": torch.sigmoid, "gelu": F.gelu,
    "softmax": lambda x, axis=-1: F.softmax(x, dim=axis),
}


class TorchBinding(Binding):
    """Spec layers and block parameters of one built model, as torch objects."""

    namespace = array_api_compat.torch
    ops = OPS

    def __init__(self, memo: dict[int, tnn.Module]):
        self.memo = memo

    def call_layer(self, layer: nn.Layer, args: tuple[Any, ...]) -> Any:
        return self.memo[id(layer)](*args)

    def param(self, block: nn.Block, name: str) -> Any:
        return getattr(self.memo[id(block)], name)


class BlockModule(tnn.Module):
    """A :class:`unifparam.nn.Block` as a torch module (children, own parameters, forward)."""

    def __init__(self, spec: nn.Block, children: list[tuple[str, tnn.Module]],
                 memo: dict[int, tnn.Module]):
        super().__init__()
        self.__dict__["spec"] = spec  # plain attributes: not modules, not in state_dict
        self.__dict__["binding"] = TorchBinding(memo)
        for key in [k for k, _ in children] + [n for n, _ in spec.own_parameters()]:
            if hasattr(tnn.Module, key):
                raise SpecError(
                    f"Block {spec.kind} has an attribute {key!r}, which is a method of "
                    f"torch.nn.Module (the torch backend names each sublayer and parameter "
                    f"after its attribute). Rename it, e.g. self.{key}_ = ..., so the block "
                    f"builds on every backend.")
        for key, child in children:
            self.add_module(key, child)
        for name, p in spec.own_parameters():
            # no storage until planned (as on every backend): the core fills it, seeded
            self.register_parameter(name, UninitializedParameter(requires_grad=p.trainable))

    def forward(self, *inputs: Any) -> Any:
        with bound(self.binding):
            return self.spec.forward(*inputs)

    def _get_name(self) -> str:
        return self.spec.kind
