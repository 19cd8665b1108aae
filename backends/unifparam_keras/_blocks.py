"""unifparam blocks as Keras layers: the block's forward runs on Keras tensors.

A block becomes a :class:`BlockLayer` (a ``keras.Model``, as a spec ``Sequential``'s
``Stack``) holding its children and, once their shapes are planned, its own parameters as
Keras variables in canonical layout. ``call`` runs the block's ``forward`` with a binding:
spec layers called there are their Keras layers, ``self.weight`` is the variable's value,
:mod:`unifparam.ops` use ``keras.ops``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops as K  # noqa: N812

from unifparam import nn
from unifparam.backend import Binding, bound
from unifparam.roles import STATISTICS

from ._adopt import Ref

#: the ops ``keras.ops`` names otherwise (or, for ``gelu``, computes otherwise by default)
OPS: dict[str, Callable[..., Any]] = {
    "transpose": K.transpose, "concat": lambda xs, axis=0: K.concatenate(xs, axis=axis),
    "gelu": lambda x: K.gelu(x, approximate=False), "asarray": K.convert_to_tensor,
}


class KerasBinding(Binding):
    namespace = K
    ops = OPS

    def __init__(self, memo: dict[int, Any], training: Any):
        self.memo, self.training = memo, training

    def call_layer(self, layer: nn.Layer, args: tuple[Any, ...]) -> Any:
        return self.memo[id(layer)](*args, training=self.training)

    def param(self, block: nn.Block, name: str) -> Any:
        return vars(self.memo[id(block)])[store(name)].value


def store(name: str) -> str:
    """The instance attribute holding a block parameter's variable."""
    return f"_unifparam_{name}"


class BlockLayer(keras.Model):
    """A :class:`unifparam.nn.Block` as a Keras model."""

    def __init__(self, spec: nn.Block, children: list[Any], memo: dict[int, Any], **kw: Any):
        super().__init__(**kw)
        self.stack = list(children)
        # plain attributes Keras does not track: the spec, and each spec layer's Keras layer
        object.__setattr__(self, "_unifparam_spec", spec)
        object.__setattr__(self, "_unifparam_memo", memo)

    def unifparam_refs(self) -> list[Ref]:
        """A Ref per own parameter (its variable exists once planned)."""
        return [Ref(self, d.name, store(d.name), store(d.name), None, d.role, d.axes,
                    d.trainable and d.name not in STATISTICS)
                for d in self._unifparam_spec.param_decls()]

    def make_param(self, name: str, shape: tuple[int, ...]) -> None:
        """Create parameter ``name``'s variable with its planned shape (values come later)."""
        if vars(self).get(store(name)) is None:
            p = self._unifparam_spec.parameter(name)
            var = self.add_weight(shape=shape, initializer="zeros", trainable=p.trainable,
                                  name=name)
            object.__setattr__(self, store(name), var)

    def build(self, *input_shapes: Any) -> None:
        self.built = True  # children are built by the adapter, parameters by make_param

    def call(self, *inputs: Any, training: Any = None) -> Any:
        with bound(KerasBinding(self._unifparam_memo, training)):
            return self._unifparam_spec.forward(*inputs)
