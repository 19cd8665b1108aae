"""unifparam blocks as Flax NNX modules: the block's forward runs on jax arrays.

A block becomes a :class:`BlockModule` whose attributes are named as the block's: its
children (``net.native.linear``) and its own parameters (``net.native.rand_weight``, an
``nnx.Param``, or a :class:`~._nnx_adopt.Constant` when ``trainable=False``) in canonical
layout. Own parameters hold ``None`` until the core's plan gives them a shape
(:func:`declare`). ``__call__`` runs the block's ``forward`` with a binding: spec layers
called there are the child modules, ``self.weight`` is the variable's value,
:mod:`unifparam.ops` use ``jax.numpy`` (the linen adapter's table).

    >>> module = BlockModule(FancyMLP(), {"linear": dense})          # doctest: +SKIP
    >>> module.linear is dense, module.rand_weight                   # doctest: +SKIP
    (True, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from unifparam import Storage, nn
from unifparam.backend import bound

from ._blocks import FlaxBinding
from ._nnx_adopt import Constant, module_at


class NNXBinding(FlaxBinding):
    """Spec layers reachable from one running block, as its child modules."""

    @staticmethod
    def submodules(spec: nn.Layer, module: Any) -> list[Any]:
        return [module_at(module, module.child_keys(key)) for key, _ in spec.children()]

    def param(self, block: nn.Block, name: str) -> Any:
        return getattr(self.found[id(block)], name)[...]


class BlockModule(nnx.Module):
    """A :class:`unifparam.nn.Block` as an NNX module (children, own parameters, forward)."""

    def __init__(self, spec: nn.Block, children: Mapping[str, nnx.Module]):
        self._spec = spec  # static (compared by identity); "_": no clash with children
        for key, child in children.items():
            setattr(self, key, child)
        for name, _ in spec.own_parameters():
            setattr(self, name, nnx.data(None))  # a variable once planned (declare)

    def child_keys(self, key: str) -> tuple[str, ...]:
        """Attribute path of child ``key`` from this module."""
        return (key,)

    def __call__(self, *inputs: Any, training: bool = False) -> Any:
        with bound(NNXBinding(self, self._spec, training)):
            return self._spec.forward(*inputs)


def declare(root: Any, storage: Storage) -> bool:
    """Give a block's own parameter its planned shape, as an abstract variable (no memory);
    False if ``storage`` is not a block's own parameter."""
    ref = storage.ref
    owner = module_at(root, ref.keys)
    if not isinstance(owner, BlockModule):
        return False
    var = getattr(owner, ref.attr)
    if var is None or tuple(var.get_value().shape) != tuple(storage.shape):
        kind = nnx.Param if owner._spec.parameter(ref.attr).trainable else Constant
        setattr(owner, ref.attr, kind(jax.ShapeDtypeStruct(tuple(storage.shape),
                                                           storage.dtype or "float32")))
    return True
