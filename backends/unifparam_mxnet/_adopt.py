"""Describe Gluon blocks in canonical terms: the layer tree, names, roles, axes, shapes.

Canonical paths of an adopted block are Gluon's own structural ones (the keys
``save_parameters`` writes: ``0.weight``, ``body.1.bias``); norm layers' ``gamma``/``beta``
read as ``weight``/``bias``, as in every other backend. A Parameter reached through two
blocks (a block used twice, or ``params=`` sharing) is one storage under its first name.

    >>> describe(net).children[0][1].params["weight"].shape      # doctest: +SKIP
    (8, None)
"""

from __future__ import annotations

import numpy as np
from mxnet.gluon import Block, Parameter
from mxnet.gluon import nn as gnn

from unifparam import NativeLayer, NativeParam
from unifparam.roles import classify, family_of

from ._layers import NATIVE_ATTR, NORMS

Ref = tuple[Block, str]
_CANONICAL = {v: k for k, v in NATIVE_ATTR.items()}


def known_shape(param: Parameter) -> tuple[int | None, ...] | None:
    """The Parameter's shape with None for sizes Gluon does not know yet (0 or -1)."""
    if param.shape is None:
        return None
    return tuple(int(d) if d > 0 else None for d in param.shape)


def canonical(block: Block, attr: str) -> str:
    """The canonical local name of ``block.<attr>`` (``gamma`` of a norm is ``weight``)."""
    return _CANONICAL.get(attr, attr) if isinstance(block, NORMS) else attr


def family(block: Block) -> str:
    """The layer family of ``block`` (see :mod:`unifparam.roles`); a convolution is one
    only in channels-first layout (Gluon's default)."""
    if isinstance(block, NORMS):
        return "norm"
    if isinstance(block, gnn.Embedding):
        return "embedding"
    if isinstance(block, gnn.Dense):
        return "dense"
    if isinstance(block, gnn.conv_layers._Conv):
        forward = block._op_name.lower() == "convolution"
        return "conv" if forward and block._kwargs.get("layout", "NC")[:2] == "NC" else "other"
    return family_of(type(block).__name__)


def native_param(block: Block, attr: str, name: str, native_name: str) -> NativeParam:
    """A NativeParam for ``block.<attr>`` under canonical ``name``."""
    param = block._reg_params[attr]
    ndim = None if param.shape is None else len(param.shape)
    role, axes = classify(family(block), canonical(block, attr), ndim)
    return NativeParam(name=name, ref=(block, attr), shape=known_shape(param), role=role,
                       axes=axes, trainable=param.grad_req != "null",
                       dtype=np.dtype(param.dtype).name, native_name=native_name,
                       storage=id(param))


def has_params(block: Block) -> bool:
    return bool(block._reg_params) or any(map(has_params, block._children.values()))


def children(block: Block) -> list[tuple[str, Block]]:
    """The sub-blocks that are layers of their own; not a layer's parameterless parts
    (the ``act`` of a Gluon ``Dense(..., activation="relu")``)."""
    kids = list(block._children.items())
    return [(k, c) for k, c in kids if has_params(c)] if block._reg_params else kids


def describe(block: Block, path: str = "") -> NativeLayer:
    """The canonical tree of ``block`` (every use of a shared block is visited)."""
    kind = type(block).__name__
    kids = children(block)
    text = f"{kind}(" if kids else " ".join(line.strip() for line in repr(block).splitlines())
    layer = NativeLayer(path, kind, text)
    for attr in block._reg_params:
        local = canonical(block, attr)
        name = f"{path}.{local}" if path else local
        layer.params[local] = native_param(block, attr, name, f"{path}.{attr}" if path else attr)
    for key, child in kids:
        layer.children.append((key, describe(child, f"{path}.{key}" if path else key)))
    return layer
