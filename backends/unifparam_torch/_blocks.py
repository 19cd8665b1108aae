"""unifparam blocks as torch modules: the block's forward runs on torch tensors.

A block becomes a :class:`BlockModule` holding its children as submodules and its own
parameters as ``nn.Parameter`` s (uninitialized while a size is unknown); its ``forward``
calls the block's own ``forward`` with a binding: spec layers called there run as their
torch modules, ``self.weight`` is the torch parameter, :mod:`unifparam.ops` use torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from torch import nn as tnn
from torch.nn.parameter import UninitializedParameter

from unifparam import nn
from unifparam._binding import Binding, bound


def _scalar_ok(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(a, b)`` where either may be a Python number (torch.maximum needs tensors)."""
    def call(a: Any, b: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return fn(a, b)
    return call


def _reduce(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        if axis is None:
            out = fn(x)
            return out.reshape((1,) * x.dim()) if keepdims else out
        return fn(x, dim=axis, keepdim=keepdims)
    return call


def _amax(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    return torch.amax(x) if dim is None else torch.amax(x, dim=dim, keepdim=keepdim)


def _amin(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    return torch.amin(x) if dim is None else torch.amin(x, dim=dim, keepdim=keepdim)


OPS: dict[str, Callable[..., Any]] = {
    "matmul": torch.matmul,
    "transpose": lambda x, axes=None: x.permute(*(axes or reversed(range(x.dim())))),
    "reshape": torch.reshape, "concat": lambda xs, axis=0: torch.cat(xs, dim=axis),
    "sum": _reduce(torch.sum), "mean": _reduce(torch.mean), "max": _reduce(_amax),
    "min": _reduce(_amin), "abs": torch.abs, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "square": torch.square, "maximum": _scalar_ok(torch.maximum),
    "minimum": _scalar_ok(torch.minimum),
    "where": lambda c, a, b: torch.where(c, a, b), "relu": F.relu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "gelu": F.gelu, "softmax": lambda x, axis=-1: F.softmax(x, dim=axis),
    "greater": _scalar_ok(torch.gt), "less": _scalar_ok(torch.lt),
    "equal": _scalar_ok(torch.eq), "zeros_like": torch.zeros_like,
    "ones_like": torch.ones_like,
}


class TorchBinding(Binding):
    """Spec layers and block parameters of one built model, as torch objects."""

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
