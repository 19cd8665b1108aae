"""Describe torch modules in canonical terms: the layer tree, names, roles, axes, shapes.

Canonical names of an adopted module are torch's own ``named_parameters()`` names; a
module used in two places is one storage listed under its first name.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn as tnn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedTensorMixin

from unifparam import NativeLayer, NativeParam
from unifparam.roles import classify, family_of

_NORMS = (tnn.modules.batchnorm._NormBase, tnn.LayerNorm, tnn.GroupNorm)


def family(module: tnn.Module) -> str:
    """The layer family of ``module`` (see :mod:`unifparam.roles`)."""
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, tnn.Embedding):
        return "embedding"
    if isinstance(module, tnn.modules.conv._ConvNd):
        return "other" if module.transposed else "conv"
    if isinstance(module, tnn.Linear):
        return "dense"
    return family_of(type(module).__name__)


def known_shape(module: tnn.Module, attr: str,
                tensor: torch.Tensor) -> tuple[int | None, ...] | None:
    """The tensor's shape, with None where a lazy module does not know its input size yet."""
    if not isinstance(tensor, UninitializedTensorMixin):
        return tuple(tensor.shape)
    if isinstance(module, tnn.LazyLinear):
        return (module.out_features, None) if attr == "weight" else (module.out_features,)
    if isinstance(module, tnn.modules.conv._LazyConvXdMixin):
        if attr == "weight" and module.transposed:  # torch's layout: in-channels first
            return (None, module.out_channels // module.groups, *module.kernel_size)
        if attr == "weight":
            return (module.out_channels, None, *module.kernel_size)
        return (module.out_channels,)
    if isinstance(module, LazyModuleMixin) and attr in ("weight", "bias", "running_mean",
                                                        "running_var"):
        return (None,)
    return None


def tensors(module: tnn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    """(attr, tensor, is_parameter) of a module's own float parameters and persistent buffers."""
    out = [(k, p, True) for k, p in module._parameters.items() if p is not None]
    for k, b in module._buffers.items():
        if b is not None and k not in module._non_persistent_buffers_set and (
                isinstance(b, UninitializedTensorMixin) or b.is_floating_point()):
            out.append((k, b, False))
    return out


def native_param(module: tnn.Module, attr: str, tensor: torch.Tensor, is_param: bool,
                 name: str) -> NativeParam:
    shape = known_shape(module, attr, tensor)
    role, axes = classify(family(module), attr, None if shape is None else len(shape))
    dtype = str(tensor.dtype).removeprefix("torch.")
    trainable = bool(is_param and tensor.requires_grad)
    return NativeParam(name=name, ref=(module, attr), shape=shape, role=role, axes=axes,
                       trainable=trainable, dtype=dtype, native_name=name, storage=id(tensor))


def describe(module: tnn.Module, path: str = "") -> NativeLayer:
    """The canonical tree of ``module`` (every use of a shared submodule is visited)."""
    layer = NativeLayer(path, type(module).__name__, partial(_text, module))  # picklable
    for attr, tensor, is_param in tensors(module):
        name = f"{path}.{attr}" if path else attr
        layer.params[attr] = native_param(module, attr, tensor, is_param, name)
    for key, child in module._modules.items():
        if child is not None:
            layer.children.append((key, describe(child, f"{path}.{key}" if path else key)))
    return layer


def _text(module: tnn.Module) -> str:
    """How torch prints a leaf module now (a lazy one becomes its eager class when called)."""
    return f"{type(module).__name__}({module.extra_repr()})"
