"""The first ``net(X)`` of a model with blocks: every layer is sized on the real input when
the real forward first reaches it (Gluon's and PyTorch's lazy-module rule), so Python
control flow on values behaves on the first call exactly as on every later one.

What a shape-only trace knows before the forward first tests a value is materialized at
once; then the backend runs the real forward. A layer it reaches that has no storage yet
stops that run (:meth:`Sizer.check`, called by ``nn.Layer.__call__``): the core sizes it from
the real input, materializes it, and runs the forward again from the start. A layer the
forward never reaches stays deferred until a later call reaches it.

    >>> from unifparam._binding import guard
    >>> guard() is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _plan, nn
from ._backend import DEFERRED, MATERIALIZED
from ._binding import guarded
from ._state import ModelState, complete, unify
from .errors import DataDependentError, InputShapeError

Shape = nn.Shape


def run(st: ModelState, inputs: Sequence[Any], training: bool) -> Any:
    """``net(X)``: a model with blocks not fully materialized is sized on its real first
    call (:func:`first_call`); any other runs as :func:`unifparam._plan.run` says."""
    if inputs and _sized_on_first_call(st):
        _plan.check_indices(st, inputs)
        return first_call(st, inputs, training)
    return _plan.run(st, inputs, training)


def materialize(st: ModelState, inputs: Sequence[Any], input_shape: Any, abstract: bool,
                mesh: Any = None, layout: Any = None) -> None:
    """``materialize(net, X)``: with example inputs, a model with blocks is sized on the real
    forward as ``net(X)`` sizes it; otherwise :func:`unifparam._plan.materialize`."""
    if inputs and not abstract and mesh is None and layout is None \
            and st.placement is None and _sized_on_first_call(st):
        _plan.check_indices(st, inputs)
        first_call(st, inputs, False)
        return
    _plan.materialize(st, inputs, input_shape, abstract, mesh, layout)


def _sized_on_first_call(st: ModelState) -> bool:
    return st.spec is not None and not st.all_in(MATERIALIZED) and any(
        isinstance(layer, nn.Block) for _, layer in nn.first_uses(st.spec))

class Sizer:
    """Watches one real forward of ``st`` for a layer that still has no storage."""

    def __init__(self, st: ModelState):
        self.st = st
        self.paths = {id(layer): path for path, layer in nn.first_uses(st.spec)}  # type: ignore
        self.request: tuple[nn.Layer, str, tuple[Any, ...]] | None = None

    def deferred(self, layer: nn.Layer, path: str) -> bool:
        """Whether calling ``layer`` now needs a storage that does not exist yet."""
        if isinstance(layer, nn.Block):  # its children are checked when they are called
            names = [self.st.nodes[path].params[n] for n, _ in layer.own_parameters()]
        else:
            names = [n for p, node in self.st.nodes.items()
                     if p == path or p.startswith(path + ".") for n in node.params.values()]
        return any(self.st.state_of(self.st.resolve(n)[0]) == DEFERRED for n in names)

    def check(self, layer: nn.Layer, args: tuple[Any, ...]) -> None:
        path = self.paths.get(id(layer))
        if path is None or self.request is not None or not self.deferred(layer, path):
            return
        self.request = (layer, path, args)
        raise _Unsized(f"Layer '{path}' is sized on this call (an internal signal: the "
                       f"forward is run again once it has storage).")


class _Unsized(Exception):
    pass


def first_call(st: ModelState, inputs: Sequence[Any], training: bool) -> Any:
    """Run ``net(*inputs)`` on a model with blocks that is not fully materialized."""
    from ._trace import trace_blocks
    shapes = _plan.input_shapes(inputs, None, _plan.receiver(st))
    try:
        layer_inputs, param_shapes = _plan.trace(st, shapes)
    except DataDependentError:  # what the forward reached before it first tested a value
        partial = trace_blocks(st.spec, shapes, None, partial=True)  # type: ignore[arg-type]
        layer_inputs, param_shapes = _collect(st, partial, "")
        _check_spellings(st, shapes, inputs)
    _materialize(st, layer_inputs, param_shapes)
    sizer = Sizer(st)
    while True:  # every run sizes at least one more storage, or raises
        sizer.request = None
        try:
            with guarded(sizer.check):
                out, st.native = st.backend.run(st.native, tuple(inputs), training)
            return out
        except BaseException:
            if sizer.request is None:  # a real error of the forward (any framework wraps
                raise                  # the signal in its own type: the request says)
        layer, path, args = sizer.request
        if not _materialize(st, *_size(st, layer, path, args)):
            shapes = ", ".join(str(tuple(int(d) for d in a.shape)) for a in args)
            fix = ("fill it in the block's build(self, *input_shapes)" if isinstance(
                layer, nn.Block) else "a Sequential is sized as a whole, and a block in it "
                "tests values: give the input sizes of the layers after that block "
                "(in_features=...), or call them from a block's forward")
            raise InputShapeError(
                f"Layer '{path}' ({layer.kind}) could not be sized from its input {shapes}: "
                f"a size its parameters need is still unknown; {fix}.")


def _check_spellings(st: ModelState, shapes: tuple[Shape, ...], inputs: Sequence[Any]
                     ) -> None:
    """Run the forward once more on numpy, past its value tests (real inputs, zeros for
    layer outputs, a few hundred tests at most), so that a non-portable spelling there is
    refused on every backend too; any other failure of that run is left to the real one."""
    from ._convert import to_numpy
    from ._trace import trace_blocks
    from .errors import SpecError
    try:
        trace_blocks(st.spec, shapes, tuple(to_numpy(x) for x in inputs),  # type: ignore
                     budget=500)
    except SpecError:
        raise
    except Exception:
        pass


def _size(st: ModelState, layer: nn.Layer, path: str, args: tuple[Any, ...]
          ) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """Layer inputs and storage shapes of ``layer`` (at ``path``) called on ``args``."""
    from ._convert import to_numpy
    from ._trace import trace_blocks
    shapes = tuple(tuple(int(d) for d in a.shape) for a in args)
    try:
        examples: Any = tuple(to_numpy(a) for a in args)
    except Exception:  # arrays inside a compiled function have shapes, not values
        examples = None
    if not any(isinstance(x, nn.Block) for _, x in nn.first_uses(layer)):
        return _collect(st, _leaf_trace(layer, shapes), path)
    try:  # blocks inside: traced on the real input's values where they test values
        traced = trace_blocks(layer, shapes, examples)
    except DataDependentError:
        traced = trace_blocks(layer, shapes, None, partial=True)
    return _collect(st, traced, path)


def _leaf_trace(layer: nn.Layer, shapes: tuple[Shape, ...]) -> dict[str, Any]:
    from ._trace import trace as trace_shapes
    return trace_shapes(layer, *shapes)


def _collect(st: ModelState, traced: dict[str, Any], prefix: str
             ) -> tuple[dict[str, Shape], dict[str, Shape]]:
    layer_inputs: dict[str, Shape] = {}
    param_shapes: dict[str, Shape] = {}
    for rel, (in_shape, pshapes) in traced.items():
        path = nn.join(prefix, rel) if rel else prefix
        if pshapes:
            layer_inputs[path] = in_shape
        for local, shape in pshapes.items():
            root, t = st.resolve(st.nodes[path].params[local])
            param_shapes[root] = shape[::-1] if t else shape
    return layer_inputs, param_shapes


def _materialize(st: ModelState, layer_inputs: dict[str, Shape],
                 param_shapes: dict[str, Shape]) -> bool:
    """Materialize every layer whose storages all have known shapes (one plan); whether
    there was any."""

    def known(name: str) -> bool:
        root = st.resolve(name)[0]
        return bool(complete(unify(param_shapes.get(root), st.status(root)[0])))  # type: ignore

    todo: list[str] = []
    for node in st.nodes.values():
        roots = [st.resolve(n)[0] for n in node.params.values()]
        if node.params and all(map(known, node.params.values())):
            todo += [r for r in roots if r not in todo and st.state_of(r) != MATERIALIZED]
    if todo:
        _plan.apply(st, *_plan.for_shapes(st, todo, param_shapes, layer_inputs, False))
    return bool(todo)
