"""unifparam blocks as linen modules: the block's forward runs on jax arrays.

A block becomes a :class:`BlockModule` whose children are its ``layers`` (scope names
``layers_<i>``, as a spec ``Sequential``) and whose own parameters are ``params`` leaves
named like the block's attributes, in canonical layout. Its ``__call__`` runs the block's
``forward`` with a binding: spec layers called there are the bound child modules,
``self.weight`` is the leaf, :mod:`unifparam.ops` use ``jax.numpy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen

from unifparam import nn
from unifparam.backend import Binding, bound

#: what the array API standard leaves out (the rest is ``jax.numpy``)
OPS: dict[str, Callable[..., Any]] = {
    "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softmax": lambda x, axis=-1: jax.nn.softmax(x, axis=axis),
}


class _Spec:
    """Holds a block spec in a linen field (compared and hashed by identity)."""

    def __init__(self, spec: nn.Block):
        self.spec = spec


class FlaxBinding(Binding):
    """Spec layers reachable from one running block, as its bound child modules."""

    namespace = jnp
    ops = OPS

    def __init__(self, module: Any, spec: nn.Block, training: bool):
        self.module, self.training = module, training
        self.found: dict[int, Any] = {id(spec): module}
        self._index(spec, module)

    def _index(self, spec: nn.Layer, module: Any) -> None:
        """Map every spec layer under ``spec`` to its module; a nested block's own insides
        are indexed by its own binding when it runs."""
        for (_, child), sub in zip(spec.children(), self.submodules(spec, module)):
            self.found.setdefault(id(child), sub)
            if not isinstance(child, nn.Block):
                self._index(child, sub)

    @staticmethod
    def submodules(spec: nn.Layer, module: Any) -> Sequence[Any]:
        """The modules of ``spec``'s children, in order (linen: ``module.layers``)."""
        return getattr(module, "layers", ())

    def call_layer(self, layer: nn.Layer, args: tuple[Any, ...]) -> Any:
        return self.found[id(layer)](*args, training=self.training)

    def param(self, block: nn.Block, name: str) -> Any:
        p = block.parameter(name)
        return self.module.param(name, linen.initializers.zeros, p.shape, jnp.float32)


class BlockModule(linen.Module):
    """A :class:`unifparam.nn.Block` as a linen module."""

    spec: _Spec
    layers: Sequence[linen.Module] = ()

    @linen.compact
    def __call__(self, *inputs: Any, training: bool = False) -> Any:
        with bound(FlaxBinding(self, self.spec.spec, training)):
            return self.spec.spec.forward(*inputs)
