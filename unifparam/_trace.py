"""Every layer's input and parameter shapes for given input shapes, without a framework
(:func:`trace`). Models with blocks run their forwards on numpy:

Spec layers run as their shape functions (``Layer.infer``) and return zeros of their output
shape; block parameters read as zeros of their shape (after the block's ``build``). Given
only input shapes, inputs are stand-ins whose truth value raises
:class:`~unifparam.errors.DataDependentError`; given example inputs, a forward that
branches on values is traced again on the examples (layer outputs still zeros).

    >>> from unifparam import nn
    >>> class Two(nn.Block):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Dense(3), nn.Dense(2)
    ...     def forward(self, x, y):
    ...         return self.a(x) + self.b(y)[:, :1]
    >>> trace_blocks(Two(), ((4, 5), (4, 7)), None)["b"]
    ((4, 7), {'weight': (2, 7), 'bias': (2,)})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import nn, ops
from ._binding import Binding, bound
from ._blockcheck import check_forward, check_output, guarded
from .errors import DataDependentError, InputShapeError, SpecError, fmt_shape

Shape = nn.Shape
Traced = dict[str, tuple[Any, dict[str, Shape]]]

MAX_BRANCHES = 100_000  # truth tests on one concrete trace before it is called endless


#: array attributes a forward may use on every backend; every other is refused by name
PORTABLE = frozenset({"shape", "ndim", "dtype"})
#: spellings some backend lacks -> the portable one
SPELLING = {"__matmul__": "ops.matmul(a, b)", "__rmatmul__": "ops.matmul(a, b)",
            "__imatmul__": "ops.matmul(a, b)", "__float__": "compare arrays in if/while "
            "(ops.sum(x) > 1); outside a forward, unifparam.to_numpy(y)",
            "item": "compare arrays in if/while (ops.sum(x) > 1); outside a forward, "
            "unifparam.to_numpy(y)", "tolist": "unifparam.to_numpy(y) outside a forward",
            "T": "ops.transpose(x)", "astype": "no cast: parameters and inputs are float32"}


def _refusal(name: str) -> Any:
    def refuse(self: Any, *args: Any) -> Any:
        fix = SPELLING.get(name) or (f"ops.{name}(x)" if name in ops.NAMES else
                                     "the functions of unifparam.ops")
        spelled = {"__matmul__": "a @ b", "__rmatmul__": "a @ b", "__imatmul__": "a @= b",
                   "__float__": "float(x)", "__int__": "int(x)"}.get(name, f"x.{name}")
        raise SpecError(f"A block's forward uses {spelled}, which does not work on every "
                        f"backend (arrays are torch, jax, tensorflow or MXNet arrays there). "
                        f"Use {fix} instead.")
    return refuse


class _Portable(np.ndarray):
    """A traced array that refuses, by name, what some backend's arrays lack."""

    for _name in [n for n in dir(np.ndarray) if not n.startswith("_") and n not in PORTABLE]:
        locals()[_name] = property(_refusal(_name))
    __matmul__ = __rmatmul__ = __imatmul__ = _refusal("__matmul__")
    __float__ = _refusal("__float__")
    __int__ = _refusal("__int__")
    del _name

    def __getattr__(self, name: str) -> Any:  # only for names numpy arrays lack
        if name.startswith("_"):
            raise AttributeError(name)
        return _refusal(name)(self)


class _Abstract(_Portable):
    """An array known by shape only: using its values in Python control flow raises."""

    def __bool__(self) -> bool:
        raise DataDependentError(
            "The forward uses array values in Python control flow (if/while), so "
            "its shapes depend on data: materialize with an example input, "
            "unifparam.materialize(net, X), instead of input_shape=.")

    __index__ = __bool__


class _Concrete(_Portable):
    """An array traced on example inputs: control flow works, endless loops are caught."""

    budget = [MAX_BRANCHES]

    def __bool__(self) -> bool:
        _Concrete.budget[0] -= 1
        if _Concrete.budget[0] < 0:
            raise DataDependentError(
                f"The forward tested array values more than {MAX_BRANCHES} times while its "
                f"shapes were traced (layer outputs are zeros then): a loop whose end "
                f"depends on layer outputs must also end when they are zero.")
        return bool(np.asarray(self))


class TraceBinding(Binding):
    """The numpy binding the core runs forwards with to learn every shape."""

    def __init__(self, spec: nn.Layer, kind: type[np.ndarray]):
        self.kind = kind
        self.paths = {id(layer): path for path, layer in nn.first_uses(spec)}
        self.out: Traced = {}
        self.ops = {name: self._wrapped(fn) for name, fn in _numpy_ops().items()}

    def _wrapped(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: self.array(fn(*map(_plain, a), **k))

    def array(self, value: Any) -> Any:
        return np.asarray(value).view(self.kind)

    def _path(self, layer: nn.Layer) -> str:
        if id(layer) not in self.paths:
            raise SpecError(f"A {type(layer).__name__} layer is called in a forward but is "
                            f"not part of the model: assign it as an attribute of the block "
                            f"in __init__ (self.name = layer) so it gets a name and storage.")
        return self.paths[id(layer)]

    def _record(self, layer: nn.Layer, path: str, x: Any, params: dict[str, Shape]) -> None:
        before = self.out.setdefault(path, (x, params))[1]
        if before != params:
            name = next(k for k in params if before.get(k) != params[k])
            raise InputShapeError(
                f"Layer '{path}' ({layer.kind}) is used more than once (one storage) with "
                f"inputs of different sizes: its {name} would be {fmt_shape(before.get(name))} "
                f"and {fmt_shape(params[name])} (input {fmt_shape(x)}). Every use must see "
                f"inputs of the same feature size.")

    def call_layer(self, layer: nn.Layer, args: tuple[Any, ...]) -> Any:
        path = self._path(layer)
        args = tuple(a if isinstance(a, np.ndarray) and type(a) is self.kind
                     else self.array(a) for a in args)
        shapes = tuple(tuple(int(d) for d in a.shape) for a in args)
        if isinstance(layer, nn.Block):
            check_forward(layer, path, len(args))
            if not layer.__dict__["_built"]:
                with bound(None):  # build() sees the declared Parameters
                    guarded(layer, path, "build", shapes, lambda: layer.build(*shapes))
                object.__setattr__(layer, "_built", True)
            own = {n: p.shape for n, p in layer.own_parameters()}
            self._record(layer, path, shapes[0] if len(shapes) == 1 else shapes, own)
            out = guarded(layer, path, "forward", shapes, lambda: layer.forward(*args))
            check_output(layer, path, out)
            return out
        if len(args) != 1:
            raise InputShapeError(f"Layer '{path}' ({layer.kind}) takes one input; it was "
                                  f"called with {len(args)}.")
        if layer.children():
            self._record(layer, path, shapes[0], {})
            x = args[0]
            for _, child in layer.children():
                x = self.call_layer(child, (x,))
            return x
        params, y = layer.infer(shapes[0], path)
        self._record(layer, path, shapes[0], params)
        return self.array(np.zeros(tuple(int(d) for d in y), np.float32))  # type: ignore[arg-type]

    def param(self, block: nn.Block, name: str) -> Any:
        p = block.parameter(name)
        if None in p.shape:
            path = nn.join(self._path(block), name)
            raise InputShapeError(
                f"Parameter '{path}' of block {block.kind} has shape {fmt_shape(p.shape)} "
                f"when its forward runs: fill the None sizes in the block's "
                f"build(self, *input_shapes), e.g. self.{name}.shape = (units, "
                f"input_shape[-1]).")
        return self.array(np.zeros(p.shape, np.float32))  # type: ignore[arg-type]


def _plain(x: Any) -> Any:
    """A traced array (or list of them) as plain numpy, for numpy's own functions."""
    if isinstance(x, np.ndarray):
        return np.ndarray.view(x, np.ndarray)
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else x


def _numpy_ops() -> dict[str, Callable[..., Any]]:
    return ops._numpy_table()


def trace_blocks(spec: nn.Layer, shapes: Sequence[Shape], examples: Sequence[Any] | None,
                 partial: bool = False, budget: int = MAX_BRANCHES) -> Traced:
    """Every called layer's input shape(s) and parameter shapes (see :func:`trace`).

    ``partial``: a forward that tests values returns what it reached before the test
    (shapes only: exact), instead of raising :class:`DataDependentError`. ``budget``: the
    truth tests allowed on the examples."""
    try:
        return _run(spec, [np.zeros(s, np.float32) for s in shapes], _Abstract, partial)
    except DataDependentError:
        if examples is None:
            raise
    from ._convert import to_numpy
    _Concrete.budget[0] = budget
    return _run(spec, [to_numpy(x) for x in examples], _Concrete)


def _run(spec: nn.Layer, inputs: list[np.ndarray], kind: type[np.ndarray],
         partial: bool = False) -> Traced:
    binding = TraceBinding(spec, kind)
    with bound(binding), np.errstate(all="ignore"):
        try:
            binding.call_layer(spec, tuple(inputs))
        except DataDependentError:
            if not partial:
                raise
    return binding.out


def trace(spec: nn.Layer, x: Shape, *more: Shape, examples: tuple[Any, ...] | None = None
          ) -> dict[str, tuple[Shape, dict[str, Shape]]]:
    """Every layer's input shape and parameter shapes for model inputs of shape ``x``, ...

    Keys are canonical layer paths (``"0.1"``; ``""`` for the root). Raises
    :class:`InputShapeError` naming the first layer the input does not fit. Models with
    blocks run their forwards on numpy (``examples``: the real inputs, if known).

    >>> trace(nn.Sequential(nn.Dense(4)), (2, 3))["0"]
    ((2, 3), {'weight': (4, 3), 'bias': (4,)})
    """
    if any(isinstance(layer, nn.Block) for _, layer in nn.first_uses(spec)):
        return trace_blocks(spec, (tuple(x), *map(tuple, more)), examples)
    if more:
        raise InputShapeError(f"This model takes one input; got {1 + len(more)}.")
    out: dict[str, tuple[Shape, dict[str, Shape]]] = {}

    def visit(layer: nn.Layer, shape: Shape, path: str) -> Shape:
        kids = layer.children()
        if not kids:
            params, y = layer.infer(shape, path)
            out.setdefault(path, (shape, params))
            return y
        out.setdefault(path, (shape, {}))
        for key, child in kids:
            shape = visit(child, shape, f"{path}.{key}" if path else key)
        return shape

    visit(spec, tuple(x), "")
    return out
