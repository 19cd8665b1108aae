"""Materialization as one plan, from one of several sources, applied by one function.

A plan says, for every storage that needs it, its complete canonical shape and how it gets
its first values; spec-built models also carry each leaf layer's input shape. Sources:

- example inputs or input shapes: :func:`trace` (spec models) or the adapter's abstract
  run (adopted models), then :func:`for_materialize`;
- a checkpoint's header: ``checkpoint.load`` gives parameter shapes and file values;
- (later) a sharding layout, which only adds placement to each storage.

:func:`apply` carries a plan out: allocate, restore ties, write values one storage at a
time (peak memory stays one parameter beyond the model). Everything that can fail (shape
contradictions, user initializers) runs before the first change.

    >>> made = for_materialize(st, inputs=(), shapes=((2, 20),), abstract=False)  # doctest: +SKIP
    >>> apply(st, *made)                                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import nn
from ._backend import ABSTRACT, ALIAS, DEFAULT, DEFERRED, MATERIALIZED, WRITE, Plan, Storage
from ._convert import default_seed
from ._lazy import np
from ._state import ModelState, Node, Registration, Slot, complete, flip, unify
from ._trace import trace as trace_shapes
from .errors import (
    ArgumentError,
    DataDependentError,
    InitializerError,
    InputShapeError,
    ParamIndexError,
    UnifparamError,
    fmt_shape,
)

Shape = nn.Shape
Values = dict[str, Callable[[], Any]]


# ---- sources ----------------------------------------------------------------------------
def trace(st: ModelState, shapes: Sequence[Shape], inputs: Sequence[Any] = ()
          ) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """Spec models: each leaf layer's input shape and each storage's shape for ``shapes``
    (``inputs``: the example inputs, if any, for forwards that branch on values).

    Raises :class:`InputShapeError` naming the first layer the input does not fit, or a
    tied storage whose uses disagree.
    """
    if not shapes:
        raise InputShapeError("The model needs an input: net(X).")
    traced = trace_shapes(st.spec, *shapes, examples=tuple(inputs) or None)  # type: ignore
    layer_inputs: dict[str, Shape] = {}
    param_shapes: dict[str, Shape] = {}
    for path, (in_shape, pshapes) in traced.items():
        if pshapes:
            layer_inputs[path] = in_shape
        node = st.nodes[path]
        for local, shape in pshapes.items():
            root, t = st.resolve(node.params[local])
            shape = flip(shape, t)
            before = param_shapes.get(root, st.status(root)[0])
            if unify(before, shape) is False:
                msg = _mismatch(node, local, flip(before, t), flip(shape, t), in_shape)
                if root != node.params[local]:
                    msg += (f" Its {local} is tied to '{root}' (one storage for every use), so "
                            f"every use must see inputs of the same size.")
                raise InputShapeError(msg)
            param_shapes[root] = shape
    return layer_inputs, param_shapes


def layer_inputs_from_params(st: ModelState, shapes: Mapping[str, Shape],
                             paths: Sequence[str]) -> dict[str, Shape]:
    """Spec models: the smallest input of each leaf layer in ``paths`` that gives its
    parameters the shapes in ``shapes`` (by root) or already known. Raises
    :class:`InputShapeError` for a layer whose input size is still unknown.
    """
    out: dict[str, Shape] = {}
    for path in paths:
        node = st.nodes[path]
        local = {k: shape_of(st, n, shapes) for k, n in node.params.items()}
        x = node.spec.minimal_input({k: s for k, s in local.items() if s is not None}) \
            if node.spec is not None else None
        if x is None:
            raise InputShapeError(
                f"Layer '{path}' ({node.kind}) has parameters of unknown shape "
                f"({', '.join(repr(n) for n in node.params.values())}). Pass example inputs: "
                f"unifparam.materialize(net, X).")
        inferred, _ = node.spec.infer(x, path)  # type: ignore[union-attr]
        for k, shape in inferred.items():
            if unify(local[k], shape) is False:
                raise InputShapeError(f"Layer '{path}' ({node.kind}) would have {k} of shape "
                                      f"{fmt_shape(shape)} but is given {fmt_shape(local[k])}.")
        out[path] = x
    return out


def shape_of(st: ModelState, name: str, planned: Mapping[str, Shape]) -> Shape | None:
    """A parameter name's shape: planned for its root, else what the core knows now."""
    root, t = st.resolve(name)
    shape = unify(planned.get(root), st.status(root)[0])
    return flip(shape if shape is not False else planned[root], t)


def for_materialize(st: ModelState, inputs: Sequence[Any], shapes: Sequence[Shape],
                    abstract: bool, mesh: Any = None, layout: Any = None
                    ) -> tuple[Plan, Values] | None:
    """The plan that materializes ``st`` (None if nothing is left to do); changes nothing
    but an adopted model's abstract shapes, undone (``Backend.uninfer``) if the plan fails."""
    layer_inputs: dict[str, Shape] = {}
    param_shapes: dict[str, Shape] = {}
    inferred = False
    if shapes and st.spec is not None:
        layer_inputs, param_shapes = trace(st, shapes, inputs)
    elif shapes and not st.all_in(ABSTRACT, MATERIALIZED):
        st.call("infer", tuple(inputs) or None, tuple(shapes))
        inferred = True
    elif shapes:  # an adopted model already sized: the input must still fit it
        st.backend.check_input(st.native, tuple(inputs) or None, tuple(shapes))
    done = (ABSTRACT, MATERIALIZED) if abstract else (MATERIALIZED,)
    todo = [r for r in st.slots if st.state_of(r) not in done]
    if not todo:
        return None
    try:
        return for_shapes(st, todo, param_shapes, layer_inputs, abstract, mesh=mesh,
                          layout=layout)
    except BaseException:
        if inferred:  # a failing user initializer: the lazy layers are lazy again
            st.call("uninfer")
        raise


def for_shapes(st: ModelState, todo: Sequence[str], param_shapes: Mapping[str, Shape],
               layer_inputs: Mapping[str, Shape], abstract: bool,
               values: Values | None = None, dry: bool = False, mesh: Any = None,
               layout: Any = None) -> tuple[Plan, Values]:
    """A plan giving storage to ``todo`` (roots) with these shapes; ``values`` (root ->
    producer) are written, every other storage gets its registered or default values.
    ``dry`` only checks that the plan can be made (no initializer runs). With a ``mesh``,
    ``layout`` places each storage (see :mod:`unifparam._layout`) and producers take an
    optional block index."""
    shapes: dict[str, tuple[int, ...]] = {}
    deferred = [r for r in todo if st.spec is None and st.state_of(r) == DEFERRED
                and not complete(unify(param_shapes.get(r), st.status(r)[0]))]  # type: ignore
    if deferred:  # an adopted layer sized by a plan's shapes (a file's) needs no input
        raise InputShapeError(
            f"Parameters {', '.join(map(repr, deferred[:4]))} belong to an adopted native "
            f"model, whose layers unifparam cannot size without an input. Call "
            f"unifparam.materialize(net, X) (abstract=True allocates nothing) first.")
    for root in todo:
        shape = unify(param_shapes.get(root), st.status(root)[0])
        if not complete(shape):  # type: ignore[arg-type]
            unknown = [r for r in todo if not complete(
                unify(param_shapes.get(r), st.status(r)[0]))]  # type: ignore[arg-type]
            raise InputShapeError(
                f"Parameters {', '.join(map(repr, unknown[:4]))} have unknown shapes: pass "
                f"example inputs, unifparam.materialize(net, X), or input_shape=(batch, ...).")
        shapes[root] = tuple(int(d) for d in shape)  # type: ignore[union-attr]
    known = {root: st.slots[root].shape for root in shapes}
    placement: dict[str, tuple[str | None, ...]] = {}
    if mesh is not None:
        from ._layout import names_of, resolve
        placement = resolve(layout or {}, st.backend.mesh_axes(mesh), shapes, names_of(st))
    if not dry:  # what the plan establishes is known from now on (fans read it)
        for root, shape in shapes.items():
            st.slots[root].shape = shape
    try:
        return _for_shapes(st, todo, shapes, layer_inputs, abstract, values, dry, placement,
                           mesh)
    except BaseException:  # a failed plan leaves the model as it was, shapes included
        for root, shape in known.items():
            st.slots[root].shape = shape
        raise


def _for_shapes(st: ModelState, todo: Sequence[str], shapes: dict[str, tuple[int, ...]],
                layer_inputs: Mapping[str, Shape], abstract: bool, values: Values | None,
                dry: bool, placement: Mapping[str, tuple[str | None, ...]],
                mesh: Any) -> tuple[Plan, Values]:
    pending = _pending_aliases(st, shapes, abstract)
    if st.spec is not None:
        named = {*shapes, *(n for n, _, _ in pending)}
        leaves = [p for p, node in st.nodes.items() if node.params and not node.children
                  and not isinstance(node.spec, nn.Block)
                  and any(n in named or st.resolve(n)[0] in shapes
                          for n in node.params.values())]
        missing = [p for p in leaves if p not in layer_inputs]
        layer_inputs = {**layer_inputs, **layer_inputs_from_params(st, shapes, missing)}
    for root in todo:  # the framework's dtype now (its own cast may have changed it)
        st.dtype(root)
    values = dict(values or {})
    if not abstract and not dry:
        for root in todo:
            slot = st.slots[root]
            if root not in values and slot.reg is not None and not slot.initialized:
                make = producer(st, slot, slot.reg, shapes[root])
                if make is not None:
                    values[root] = FrameworkDefault(make) if slot.reg.source == "default" \
                        else make
    storages: dict[str, Storage] = {}
    for root in todo:
        slot = st.slots[root]
        if root in values:
            storages[root] = Storage(root, slot.ref, shapes[root], slot.dtype, WRITE,
                                     shard=placement.get(root))
        else:
            backup = None if abstract else fallback(st, slot, shapes[root])
            storages[root] = Storage(root, slot.ref, shapes[root], slot.dtype, DEFAULT,
                                     shard=placement.get(root), fallback=backup)
    for name, ref, shape in pending:
        root, t = st.resolve(name)
        shard = placement.get(root)
        storages[name] = Storage(name, ref, shape, st.slots[root].dtype, ALIAS,
                                 shard[::-1] if shard is not None and t else shard)
    return Plan(storages, abstract, dict(layer_inputs), mesh, device=st.device), values


def _pending_aliases(st: ModelState, shapes: Mapping[str, tuple[int, ...]], abstract: bool
                     ) -> list[tuple[str, Any, tuple[int, ...]]]:
    """Explicitly tied uses whose own native slot still needs a shape: (name, ref, shape)."""
    done = (ABSTRACT, MATERIALIZED) if abstract else (MATERIALIZED,)
    out = []
    for name, alias in st.aliases.items():
        if alias.ref is None or st.backend.status(st.native, alias.ref)[1] in done:
            continue
        root_shape = shapes.get(alias.root) or st.status(alias.root)[0]
        if complete(root_shape):
            out.append((name, alias.ref, flip(tuple(root_shape), alias.transpose)))
    return out


# ---- values -----------------------------------------------------------------------------
def target(st: ModelState, slot: Slot, shape: tuple[int, ...]) -> Any:
    """What an initializer is asked to fill for ``slot`` (fans from its logical axes)."""
    from .init import Target, fans
    fan_in, fan_out = fans(shape, slot.axes)
    if len(shape) == 1:  # a bias's fans are its layer's weight's (torch's default bias bound)
        weight = st.nodes[slot.layer].params.get("weight")
        if weight is not None and weight != slot.name:
            root, _ = st.resolve(weight)
            w = st.slots[root]
            if complete(w.shape) and len(w.shape) > 1:  # type: ignore[arg-type]
                fan_in, fan_out = fans(tuple(w.shape), w.axes)  # type: ignore[arg-type]
    from .dtypes import stream
    return Target(slot.name, shape, stream(slot.dtype), slot.role, slot.axes, fan_in, fan_out)


def _stored(make: Callable[..., Any], dtype: str, drawn: str) -> Callable[..., Any]:
    """``make`` with its values rounded to the storage ``dtype`` (drawn in ``drawn``)."""
    if dtype == drawn:
        return make
    from .dtypes import cast
    return lambda *index: cast(make(*index), dtype)


def producer(st: ModelState, slot: Slot, reg: Registration,
             shape: tuple[int, ...]) -> Callable[[], Any] | None:
    """A function making ``reg``'s values for ``slot`` (None: the framework's default).

    Values of initializers unifparam does not ship are made and checked now, so that a
    failing user function raises before the model changes; built-in ones are made when
    written, one at a time.
    """
    if reg.init is None:
        return None
    make = _producer(st, slot, reg, shape)
    return _stored(make, slot.dtype, target(st, slot, shape).dtype)


def _producer(st: ModelState, slot: Slot, reg: Registration,
              shape: tuple[int, ...]) -> Callable[[], Any]:
    """:func:`producer`'s values, in the dtype they are drawn in."""
    from .init import block_slices, role_default, validate
    tgt = target(st, slot, shape)
    if reg.role_default:
        return lambda index=None: role_default(tgt) if index is None else \
            role_default(tgt)[block_slices(shape, index)]
    seed = reg.seed if reg.seed is not None else default_seed()
    if seed is None:
        import secrets
        seed = secrets.randbits(63)
    init = reg.init
    if trusted(init):
        from .init import Distribution
        if isinstance(init, Distribution) and tgt.dtype != slot.dtype:  # rounded chunkwise
            return lambda index=None: init.generate(tgt, seed, slot.dtype) if index is None \
                else init.generate_block(tgt, seed, index)
        return lambda index=None: init.generate(tgt, seed) if index is None else \
            init.generate_block(tgt, seed, index)
    try:
        value = validate(tgt, init.generate(tgt, seed), init)
    except UnifparamError:
        raise
    except Exception as e:
        raise InitializerError(f"Initializer {init!r} failed for parameter '{slot.name}' "
                               f"{fmt_shape(shape)}: {type(e).__name__}: {e}. Nothing was "
                               f"changed; fix the initializer and call again.") from e
    return lambda index=None: value if index is None else value[block_slices(shape, index)]


def fallback(st: ModelState, slot: Slot, shape: tuple[int, ...]) -> Callable[[], Any]:
    """Values for a DEFAULT storage whose framework has no default initializer: the role's
    standard value (bias 0, scale 1), else :class:`~unifparam.init.Default` drawn from a
    seed of its own (the registered seed when there is one)."""
    from .init import Default, role_default
    tgt = target(st, slot, shape)
    if tgt.role not in Default.roles:
        return _stored(lambda: role_default(tgt), slot.dtype, tgt.dtype)
    seed = slot.reg.seed if slot.reg is not None and slot.reg.seed is not None else None
    if seed is None:
        import secrets
        seed = secrets.randbits(63)
    return _stored(lambda: Default().generate(tgt, seed), slot.dtype, tgt.dtype)


def trusted(init: Any) -> bool:
    """True for unifparam's own initializers, whose output is right by construction."""
    from .init import FunctionInit, is_builtin
    return is_builtin(init) and not isinstance(init, FunctionInit)


class FrameworkDefault:
    """Values of a default the user did not choose (a block's or ``set_seed``'s portable
    default): like the framework's own, ``initialize`` overwrites them without force_reinit."""

    def __init__(self, make: Callable[..., Any]):
        self.make = make

    def __call__(self, *args: Any) -> Any:
        return self.make(*args)


# ---- apply ------------------------------------------------------------------------------
def apply(st: ModelState, plan: Plan, values: Values) -> None:
    """Allocate what ``plan`` says, restore ties, then write ``values`` one at a time."""
    if plan.storages:
        st.call("allocate", plan)
        _to_planned_dtypes(st, plan)
    apply_ties(st)
    for root, storage in plan.storages.items():
        if storage.fill == ALIAS or plan.abstract:
            continue
        default = isinstance(values.get(root), FrameworkDefault)
        if root in values and plan.mesh is not None and storage.shard is not None:
            st.call("write_sharded", storage, plan.mesh, values.pop(root))
        elif root in values:
            st.call("write", storage.ref, contiguous(values.pop(root)()))
        st.slots[root].initialized = st.slots[root].initialized or not default and (
            st.slots[root].reg is not None or storage.fill == WRITE)


def _to_planned_dtypes(st: ModelState, plan: Plan) -> None:
    """Storages an adapter allocated in its framework's dtype are cast to the planned one
    before any value is written (a spec built in bfloat16, a cast model materialized)."""
    from .dtypes import canonical
    for storage in plan.storages.values():
        if storage.fill == ALIAS:
            continue
        live = st.backend.dtype_of(st.native, storage.ref)
        if live is not None and canonical(live) != storage.dtype:
            st.call("cast", storage.ref, storage.dtype)


def apply_ties(st: ModelState) -> None:
    """Point every explicitly tied use at its root once both have storage of one kind."""
    for alias in st.aliases.values():
        if alias.ref is None:  # one native layer used twice: nothing to re-point
            continue
        state = st.state_of(alias.root)
        if state == DEFERRED or st.backend.status(st.native, alias.ref)[1] == DEFERRED:
            continue
        if alias.carry is not None and state == MATERIALIZED:
            value = alias.carry.T if alias.transpose else alias.carry
            st.call("write", st.slots[alias.root].ref, contiguous(value))
            st.slots[alias.root].initialized, alias.carry = True, None
        st.call("alias", st.slots[alias.root].ref, alias.ref, alias.transpose)


def contiguous(value: Any) -> Any:
    """``value`` as a C-contiguous numpy array, 0-d kept 0-d (np.ascontiguousarray makes 1-d)."""
    return np.asarray(value, order="C")


def _mismatch(node: Node, local: str, expected: Shape | None, got: Shape, x: Shape) -> str:
    if expected is not None and len(expected) == len(got):
        d = next(i for i, (e, g) in enumerate(zip(expected, got)) if e is not None and e != g)
        what = "input size" if d == (1 if node.kind != "LayerNorm" and len(got) > 1 else 0) \
            else f"dimension {d} of {local}"
        return (f"Layer '{node.path}' ({node.kind}) expects {what} {expected[d]} ({local} "
                f"{fmt_shape(expected)}), but its input {fmt_shape(x)} has {got[d]}. Feed inputs "
                f"of the size the model was built or materialized with (only the batch size may "
                f"change), or build a new model.")
    return (f"Layer '{node.path}' ({node.kind}) has {local} of shape {fmt_shape(expected)}, but "
            f"input {fmt_shape(x)} needs {fmt_shape(got)}.")


# ---- the verbs' shared entry points -----------------------------------------------------
def receiver(st: ModelState) -> str:
    """`` of layer '0' (Dense)``: the layer that takes the model's input, for messages."""
    node = st.root
    while node.children and not node.params and not isinstance(node.spec, nn.Block):
        node = next(iter(node.children.values()))
    return f" of layer '{node.path or 'model'}' ({node.kind})"


def input_shapes(inputs: Sequence[Any], input_shape: Any, into: str = ""
                 ) -> tuple[Shape, ...]:
    """Shapes of example inputs, or ``input_shape`` (one shape or one per input); checked.
    ``into`` (see :func:`receiver`) names the layer taking them in messages."""
    if inputs:
        for i, x in enumerate(inputs):
            _check_dtype(x, f"input {i}{into}" if len(inputs) > 1 else f"the input{into}")
        shapes = tuple(tuple(int(d) for d in (x.shape if hasattr(x, "shape") else np.shape(x)))
                       for x in inputs)
    elif input_shape is None:
        return ()
    elif not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise ArgumentError(f"input_shape={input_shape!r}: expected a shape tuple, batch first, "
                            f"e.g. input_shape=(1, 20) (or one tuple per input).")
    elif not any(isinstance(d, (tuple, list)) for d in input_shape):  # one shape
        shapes = (tuple(input_shape),)
    else:
        if not all(isinstance(s, (tuple, list)) for s in input_shape):
            raise ArgumentError(f"input_shape={input_shape!r}: expected a shape tuple of ints, "
                                f"batch first, e.g. input_shape=(1, 20) (or one per input).")
        shapes = tuple(tuple(s) for s in input_shape)
    for i, shape in enumerate(shapes):
        if any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d <= 0
               for d in shape):
            which = f"input {i}{into}" if len(shapes) > 1 else f"the input{into}"
            raise InputShapeError(f"Shape {fmt_shape(shape)} of {which} has a size that is not "
                                  f"a positive int. Pass inputs with at least one element per "
                                  f"dimension, batch first, e.g. input_shape=(1, 20).")
    return tuple(tuple(int(d) for d in shape) for shape in shapes)


_NOT_NUMBERS = ("complex", "str", "bytes", "object", "void", "datetime", "timedelta")


def _check_dtype(x: Any, which: str) -> None:
    """Inputs hold real numbers (float, int or bool): strings, objects, None are refused."""
    which = which[:1].upper() + which[1:]
    if x is None or isinstance(x, (str, bytes)):
        raise ArgumentError(f"{which} is {type(x).__name__} {x!r:.40}; the model "
                            f"takes real numbers. Pass a float array.")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        if not isinstance(x, (list, tuple, int, float, complex)):
            return  # a framework's own input structure (a dict, ...): the adapter's to judge
        try:
            dtype = np.asarray(x).dtype
        except (ValueError, TypeError) as e:
            raise ArgumentError(f"{which} is not an array ({type(x).__name__}: "
                                f"{e}). Pass a numpy array or the framework's tensor.") from None
    text = str(dtype).lower()
    numeric = dtype.kind in "biuf" if isinstance(dtype, np.dtype) else not any(
        word in text for word in _NOT_NUMBERS)
    if not numeric:
        raise ArgumentError(f"{which} has dtype {dtype} ({type(x).__name__}); the "
                            f"model takes real numbers. Pass a float array (or integer "
                            f"indices for an Embedding).")


def check_indices(st: ModelState, inputs: Sequence[Any]) -> None:
    """Spec models starting with an Embedding: its input holds integer indices in range.

    Frameworks disagree (torch raises, Flax and Keras return NaN or clamp silently), so the
    core checks before running.
    """
    if st.spec is None or len(inputs) != 1:
        return
    layer, path = st.spec, ""
    while layer.children():
        key, layer = layer.children()[0]
        path = nn.join(path, key)
    if not isinstance(layer, nn.Embedding):
        return
    x = inputs[0]
    if not isinstance(x, np.ndarray):
        x = np.asarray(st.backend.to_numpy(x))
    if x.dtype.kind not in "iu":
        raise ArgumentError(f"Layer '{path}' (Embedding) takes integer indices, got an input of "
                            f"dtype {x.dtype}. Convert it, e.g. X.astype('int64').")
    if x.size and (x.min() < 0 or x.max() >= layer.num_embeddings):
        bad = x.min() if x.min() < 0 else x.max()
        raise ParamIndexError(f"Layer '{path}' (Embedding) has {layer.num_embeddings} rows "
                              f"(num_embeddings={layer.num_embeddings}) but its input holds "
                              f"index {int(bad)}. Indices must be in [0, "
                              f"{layer.num_embeddings}).")


def materialize(st: ModelState, inputs: Sequence[Any], input_shape: Any,
                abstract: bool, mesh: Any = None, layout: Any = None) -> None:
    """Infer every shape and fill every storage, once (see ``unifparam.materialize``)."""
    from .errors import LayoutError, UnsupportedError
    if layout is not None and mesh is None:
        raise LayoutError("A layout places parameters on a mesh: pass mesh= too, e.g. "
                          "materialize(net, X, mesh=jax.make_mesh((2, 4), ('data', 'model')), "
                          "layout=...).")
    if abstract and "abstract" not in st.backend.capabilities:
        raise UnsupportedError(f"Backend {st.backend.name!r} cannot materialize abstractly "
                               f"(without memory). Call materialize(net, X) instead.")
    if mesh is None and st.placement is not None:  # placed when materialized abstractly
        mesh, layout = st.placement
    shapes = input_shapes(inputs, input_shape, receiver(st))
    check_indices(st, inputs)
    made = for_materialize(st, inputs, shapes, abstract, mesh, layout)
    if made is not None:
        apply(st, *made)
    st.placement = (mesh, layout) if abstract and mesh is not None else None


def materialize_known(st: ModelState) -> None:
    """Materialize a spec model whose every storage has a known shape (Gluon's rule: a
    block with all sizes given, ``MyLinear(5, 3)``, gets memory when initialized)."""
    todo = [r for r in st.slots if st.state_of(r) != MATERIALIZED]
    if st.spec is None or not todo or not all(complete(st.status(r)[0]) for r in todo):
        return
    apply(st, *for_shapes(st, todo, {}, {}, False))


def check_call(st: ModelState, inputs: Sequence[Any]) -> None:
    """Before running a materialized spec model: input sizes, checked by shapes only (a
    forward that tests values is checked up to its first test, then run as is)."""
    try:
        trace(st, input_shapes(inputs, None, receiver(st)))
    except DataDependentError:
        pass
    check_indices(st, inputs)


def run(st: ModelState, inputs: Sequence[Any], training: bool) -> Any:
    """``net(X)``: materializes on the first call, checks input sizes, runs the backend."""
    if not inputs:
        raise InputShapeError("The model needs an input: net(X).")
    if not st.all_in(MATERIALIZED):
        materialize(st, inputs, None, False)
    elif st.spec is not None:
        check_call(st, inputs)
    else:  # an adopted model may take any batch size its framework does: dtypes only
        into = receiver(st)
        for i, x in enumerate(inputs):
            _check_dtype(x, f"input {i}{into}" if len(inputs) > 1 else f"the input{into}")
    out, st.native = st.backend.run(st.native, tuple(inputs), training)
    return out
