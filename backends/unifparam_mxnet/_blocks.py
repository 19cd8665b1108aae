"""unifparam blocks as Gluon blocks: the block's forward runs imperatively on NDArrays.

A block becomes a :class:`BlockWrapper` (a plain ``gluon.Block``: its forward may branch on
values) holding its children under their names and its own parameters as Gluon
``Parameter`` s (size 0 while unknown); ``forward`` runs the block's ``forward`` with a
binding: spec layers called there are their Gluon blocks, ``self.weight`` is the
parameter's data, :mod:`unifparam.ops` use ``mx.nd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxnet import nd
from mxnet.gluon import Block

from unifparam import nn
from unifparam.backend import Binding, bound


class Scalar(nd.NDArray):
    """A full reduction: MXNet's arrays have no 0-d shape (its sum is shape (1,)), so this
    one reads back as a 0-d numpy array, as on every other backend."""

    __slots__: list[str] = []

    def asnumpy(self) -> Any:
        return super().asnumpy().reshape(())


def _reduce(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        out = fn(x, axis=() if axis is None else axis, keepdims=keepdims)
        if axis is None and not keepdims:
            out.__class__ = Scalar
        return out
    return call


def _keep(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An elementwise op that keeps a full reduction 0-d (``ops.sqrt(ops.sum(x))``)."""
    def call(x: Any) -> Any:
        out = fn(x)
        if isinstance(x, Scalar):
            out.__class__ = Scalar
        return out
    return call


def _as_nd(like: Any, value: Any) -> Any:
    return value if isinstance(value, nd.NDArray) else nd.full(like.shape, value,
                                                                dtype=like.dtype)


def _binary(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(a: Any, b: Any) -> Any:
        if not isinstance(a, nd.NDArray):
            a = _as_nd(b, a)
        if not isinstance(b, nd.NDArray):
            b = _as_nd(a, b)
        return fn(a, b)
    return call


def _gelu(x: Any) -> Any:
    return 0.5 * x * (1.0 + nd.erf(x / 2.0 ** 0.5))


OPS: dict[str, Callable[..., Any]] = {
    "matmul": nd.dot, "transpose": lambda x, axes=None: nd.transpose(x, axes=axes or ()),
    "reshape": lambda x, shape: nd.reshape(x, shape=shape),
    "concat": lambda xs, axis=0: nd.concat(*xs, dim=axis), "sum": _reduce(nd.sum),
    "mean": _reduce(nd.mean), "max": _reduce(nd.max), "min": _reduce(nd.min), "abs": _keep(nd.abs),
    "exp": _keep(nd.exp), "log": _keep(nd.log), "sqrt": _keep(nd.sqrt),
    "square": _keep(nd.square),
    "maximum": nd.maximum, "minimum": nd.minimum,
    "where": lambda c, a, b: nd.where(c, *(_as_nd(c, v) for v in (a, b))),
    "relu": _keep(nd.relu), "sigmoid": _keep(nd.sigmoid), "tanh": _keep(nd.tanh),
    "gelu": _gelu,
    "softmax": lambda x, axis=-1: nd.softmax(x, axis=axis), "greater": _binary(nd.greater),
    "less": _binary(nd.lesser), "equal": _binary(nd.equal), "zeros_like": nd.zeros_like,
    "ones_like": nd.ones_like, "asarray": lambda v: nd.array(v, dtype=v.dtype),
}


class _Holder:
    def __init__(self, spec: nn.Block, memo: dict[int, Any]):
        self.spec, self.memo = spec, memo


class MXNetBinding(Binding):
    ops = OPS

    def __init__(self, memo: dict[int, Any]):
        self.memo = memo

    def call_layer(self, layer: nn.Layer, args: tuple[Any, ...]) -> Any:
        return self.memo[id(layer)](*args)

    def param(self, block: nn.Block, name: str) -> Any:
        param = self.memo[id(block)]._reg_params[name]
        return param.data(param.list_ctx()[0])


class BlockWrapper(Block):
    """A :class:`unifparam.nn.Block` as a Gluon block."""

    def __init__(self, spec: nn.Block, children: list[tuple[str, Block]], memo: dict[int, Any]):
        super().__init__()
        self._unifparam = _Holder(spec, memo)
        for key, child in children:
            self.register_child(child, key)
        for name, p in spec.own_parameters():
            shape = tuple(0 if d is None else d for d in p.shape)
            self._reg_params[name] = self.params.get(
                name, shape=shape, allow_deferred_init=True,
                grad_req="write" if p.trainable else "null")

    def forward(self, *inputs: Any) -> Any:
        with bound(MXNetBinding(self._unifparam.memo)):
            return self._unifparam.spec.forward(*inputs)

    def __repr__(self) -> str:
        return self._unifparam.spec.kind
