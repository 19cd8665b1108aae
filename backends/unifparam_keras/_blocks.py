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
from unifparam._binding import Binding, bound
from unifparam.roles import STATISTICS

from ._adopt import Ref

#: ``keras.ops`` names what the array API standard names otherwise or leaves out
OPS: dict[str, Callable[..., Any]] = {
    "transpose": K.transpose, "concat": lambda xs, axis=0: K.concatenate(xs, axis=axis),
    "relu": K.relu, "sigmoid": K.sigmoid, "gelu": lambda x: K.gelu(x, approximate=False),
    "softmax": lambda x, axis=-1: K.softmax(x, axis=axis),
}


class _Holder:
    """Plain holder Keras does not track: the block spec and every spec layer's Keras layer."""

    def __init__(self, spec: nn.Block, memo: dict[int, Any]):
        self.spec, self.memo = spec, memo


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
        self._unifparam = _Holder(spec, memo)

    def unifparam_refs(self) -> list[Ref]:
        """A Ref per own parameter (its variable exists once planned)."""
        spec = self._unifparam.spec
        return [Ref(self, name, store(name), store(name), None, d.role, d.axes,
                    d.trainable and d.name not in STATISTICS)
                for name, d in ((d.name, d) for d in spec.param_decls())]

    def make_param(self, name: str, shape: tuple[int, ...]) -> None:
        """Create parameter ``name``'s variable with its planned shape (values come later)."""
        if vars(self).get(store(name)) is None:
            p = self._unifparam.spec.parameter(name)
            var = self.add_weight(shape=shape, initializer="zeros", trainable=p.trainable,
                                  name=name)
            object.__setattr__(self, store(name), var)

    def build(self, *input_shapes: Any) -> None:
        self.built = True  # children are built by the adapter, parameters by make_param

    def call(self, *inputs: Any, training: Any = None) -> Any:
        with bound(KerasBinding(self._unifparam.memo, training)):
            return self._unifparam.spec.forward(*inputs)
