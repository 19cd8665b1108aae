"""The five verbs: build, params, initialize, tie, materialize (plus forward and gradients).

All semantics live here, once, for every backend: deferred registration, the force_reinit
rule, tie bookkeeping, canonical names, seeded values. Each verb validates everything
before its first change, so a failed call leaves the model as it was.

    >>> net = build(nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10)))
    >>> initialize(net, init.Normal(std=0.01), seed=0)   # registers: shapes are unknown
    >>> net(np.zeros((2, 20), np.float32)).shape         # infers, then fills
    (2, 10)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from . import nn
from ._backend import ABSTRACT, DEFERRED, MATERIALIZED, Materialization, NativeLayer, NativeParam
from ._lazy import np
from ._model import Alias, Model, ModelState, Node, Param, ParamDict, Registration, Slot
from ._registry import detect, get_backend
from .errors import (
    AlreadyInitializedWarning,
    BackendNotFoundError,
    InputShapeError,
    TieError,
    UnknownNameError,
    UnsupportedError,
    fmt_shape,
)
from .init import Default, Initializer, Target, as_initializer, fans, is_builtin, role_default

Shape = tuple[int | None, ...]


# ---- build ------------------------------------------------------------------------------
def build(model: Any, backend: str | None = None) -> Model:
    """A Model handle for a spec or a native model (torch Module, Keras model, Flax module).

    The backend comes from ``backend``, else the native object's type, else
    ``UNIFPARAM_BACKEND``.

    >>> net = build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)), backend="torch")
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, nn.Layer):
        be = get_backend(backend)
        native, natives = be.build(model)
        return Model(*_state_from_spec(be, model, native, natives))
    found = detect(model)
    if found is None and backend is None:
        raise BackendNotFoundError(
            f"Cannot tell which framework a {type(model).__module__}.{type(model).__qualname__} "
            f"belongs to. Pass a unifparam.nn spec, a native model, or backend='name'.")
    be = get_backend(backend or found)
    if found is not None and found != be.name:
        raise BackendNotFoundError(f"A {found} model cannot be adopted by backend {be.name!r}. "
                                   f"Use backend={found!r}.")
    if "adopt" not in be.capabilities:
        raise UnsupportedError(f"Backend {be.name!r} cannot adopt native models yet.")
    native, tree = be.adopt(model)
    return Model(*_state_from_tree(be, native, tree))


def _state_from_spec(be: Any, spec: nn.Layer, native: Any,
                     natives: dict[str, NativeParam]) -> tuple[ModelState, Node]:
    first_use: dict[int, str] = {}
    aliases: dict[str, str] = {}

    def visit(layer: nn.Layer, path: str) -> Node:
        node = Node(path, layer.kind, layer.describe(), spec=layer)
        first = first_use.setdefault(id(layer), path)
        for decl in layer.param_decls():
            name = f"{path}.{decl.name}" if path else decl.name
            node.params[decl.name] = name
            if first != path:  # the same spec object again: its storage is the first use's
                aliases[name] = f"{first}.{decl.name}" if first else decl.name
        for key, child in layer.children():
            node.children[key] = visit(child, f"{path}.{key}" if path else key)
        return node

    root = visit(spec, "")
    state = ModelState(be, native, root, spec)
    for node in state.nodes.values():
        decls = {d.name: d for d in node.spec.param_decls()} if node.spec else {}
        for local, name in node.params.items():
            if name in aliases:
                first = aliases[name]
                state.aliases[name] = Alias(state.aliases[first].root if first in state.aliases
                                            else first)
                continue
            np_ = natives[name]
            decl = decls[local]
            reg = None if decl.init is None else Registration(as_initializer(decl.init),
                                                              source="constructor")
            shape, status = be.status(native, np_.ref)
            state.slots[name] = Slot(name, node.path, np_.ref, shape or decl.shape, status,
                                     decl.role, decl.axes, decl.trainable, np_.dtype,
                                     np_.native_name, reg)
    return state, root


def _state_from_tree(be: Any, native: Any, tree: NativeLayer) -> tuple[ModelState, Node]:
    storages: dict[Any, str] = {}
    slots: list[Slot] = []
    aliases: dict[str, Alias] = {}

    def visit(layer: NativeLayer) -> Node:
        node = Node(layer.path, layer.kind, layer.text)
        for local, p in layer.params.items():
            node.params[local] = p.name
            key = p.storage if p.storage is not None else p.name
            if key in storages:  # re-pointed after every materialization (meta -> to_empty)
                aliases[p.name] = Alias(storages[key], ref=p.ref)
                continue
            storages[key] = p.name
            shape, status = be.status(native, p.ref)
            slots.append(Slot(p.name, layer.path, p.ref, shape or p.shape, status, p.role, p.axes,
                              p.trainable, p.dtype, p.native_name))
        for key, child in layer.children:
            node.children[key] = visit(child)
        return node

    root = visit(tree)
    state = ModelState(be, native, root, None)
    state.slots = {s.name: s for s in slots}
    state.aliases = aliases
    return state, root


# ---- params -----------------------------------------------------------------------------
def params(model: Model) -> ParamDict:
    """Ordered mapping name -> Param of a model or layer; each storage once, ties as aliases.

    Names are relative to ``model`` (``"weight"`` for ``params(net[0])``, like torch);
    ``Param.name`` is always the full canonical name. Works before shapes are known.
    """
    st, node = model._st, model._node
    prefix = f"{node.path}." if node.path else ""
    out = ParamDict()
    seen: set[str] = set()
    for n in _names_under(node):
        root, _ = st.resolve(n)
        if root not in seen:
            seen.add(root)
            out[n[len(prefix):]] = Param(st, n)
    return out


def _names_under(node: Node) -> Iterable[str]:
    yield from node.params.values()
    for child in node.children.values():
        yield from _names_under(child)


def _roots_under(st: ModelState, node: Node) -> list[str]:
    return list(dict.fromkeys(st.resolve(n)[0] for n in _names_under(node)))


# ---- initialize -------------------------------------------------------------------------
Select = str | Param | Model | Callable[[Param], bool] | Iterable[Any] | None


def initialize(model: Model, init: Initializer | Callable | None = None, *, select: Select = None,
               force_reinit: bool = False, seed: int | None = None) -> None:
    """Register an initializer and fill every parameter whose shape is known.

    Parameters still deferred are filled when materialized, once. An initializer given for
    a model or layer fills its weights (biases 0, norm scales 1); ``select`` by name pattern
    (``"*.bias"``), Param or predicate picks exact parameters, whatever their role.
    Re-initializing a filled parameter needs ``force_reinit=True`` (else a warning, values
    kept). With ``seed``, values depend only on (seed, name, shape).

    >>> initialize(net, init.XavierUniform(), select=net[0], force_reinit=True)
    """
    st = model._st
    init_ = as_initializer(init)
    if init_ is None and seed is not None:
        init_ = Default()
    chosen = _select(model, select)  # name -> picked explicitly?
    kept, plan = [], {}
    for name, explicit in chosen.items():
        slot = st.refresh(st.slots[name])
        if slot.initialized and not force_reinit:
            kept.append(name)
            continue
        if not explicit and slot.reg is not None and slot.reg.source == "constructor":
            # a layer's own initializer wins over a model-wide one; a given seed still applies
            plan[name] = slot.reg if seed is None else Registration(
                slot.reg.init, seed, slot.reg.source, slot.reg.role_default)
            continue
        role_ok = explicit or init_ is None or init_.roles is None or slot.role in init_.roles
        plan[name] = Registration(init_, seed, "select" if explicit else "initialize",
                                  role_default=not role_ok)
    ready = {n: r for n, r in plan.items() if st.slots[n].state == MATERIALIZED}
    values = {n: _values(st, st.slots[n], r) for n, r in ready.items()}  # may raise: no change
    for name, reg in plan.items():
        st.slots[name].reg = reg
    _write_values(st, values)
    if kept:
        shown = ", ".join(repr(n) for n in kept[:5]) + (", ..." if len(kept) > 5 else "")
        warnings.warn(f"Parameters {shown} are already initialized; kept their values. Pass "
                      f"force_reinit=True to re-initialize.", AlreadyInitializedWarning,
                      stacklevel=2)


def _select(model: Model, select: Select) -> dict[str, bool]:
    st = model._st
    if select is None:
        return dict.fromkeys(_roots_under(st, model._node), False)
    if isinstance(select, Model):
        return dict.fromkeys(_roots_under(st, select._node), False)
    if isinstance(select, Param):
        return {st.resolve(select.name)[0]: True}
    if isinstance(select, str):
        import fnmatch
        prefix = f"{model.path}." if model.path else ""
        names = [n for n in _names_under(model._node)
                 if fnmatch.fnmatchcase(n, select) or fnmatch.fnmatchcase(n[len(prefix):], select)]
        if not names:
            raise UnknownNameError(f"select={select!r} matches no parameter of "
                                   f"'{model.path or 'model'}'. Names look like "
                                   f"{next(iter(_names_under(model._node)), '0.weight')!r}.")
        return {st.resolve(n)[0]: True for n in names}
    if callable(select):
        return {st.resolve(n)[0]: True for n, p in params(model).items() if select(p)}
    out: dict[str, bool] = {}
    for item in select:
        for n, explicit in _select(model, item).items():
            out[n] = out.get(n, False) or explicit
    return out


def _target(st: ModelState, slot: Slot) -> Target:
    shape = tuple(int(d) for d in slot.shape)  # type: ignore[union-attr]
    fan_in, fan_out = fans(shape, slot.axes)
    if len(shape) == 1:  # a bias's fans are its layer's weight's (torch's default bias bound)
        weight = st.nodes[slot.layer].params.get("weight")
        if weight is not None and weight != slot.name:
            w = st.slots[st.resolve(weight)[0]]
            if w.shape is not None and None not in w.shape and len(w.shape) > 1:
                fan_in, fan_out = fans(tuple(w.shape), w.axes)  # type: ignore[arg-type]
    return Target(slot.name, shape, slot.dtype, slot.role, slot.axes, fan_in, fan_out)


def _values(st: ModelState, slot: Slot, reg: Registration) -> np.ndarray | None:
    """The values ``reg`` gives ``slot`` (None: the framework's default, already there)."""
    if reg.init is None:
        return None
    target = _target(st, slot)
    if reg.role_default:
        return role_default(target)
    seed = reg.seed
    if seed is None:
        import secrets
        seed = secrets.randbits(63)
    return reg.init.generate(target, seed)


def _builtin(reg: Registration) -> bool:
    """True if ``reg``'s values need no checking (and so may be made after changes start)."""
    return reg.role_default or (reg.init is not None and is_builtin(reg.init))


def _write_values(st: ModelState, values: dict[str, np.ndarray | None]) -> None:
    resets = [st.slots[n].ref for n, v in values.items() if v is None]
    if resets:
        st.native = st.backend.reset(st.native, resets)
    for name, value in values.items():
        if value is not None:
            st.native = st.backend.write(st.native, st.slots[name].ref, value)
        st.slots[name].initialized = True


# ---- tie --------------------------------------------------------------------------------
def tie(model: Model, a: Any, b: Any, *, transpose: bool = False) -> None:
    """Make ``b`` use ``a``'s storage: writes through either are seen by both, gradients add.

    ``a`` and ``b`` are parameters (Param or name) or layers (handle or path; same-named
    parameters are tied). ``transpose=True`` makes ``b`` the transpose of ``a`` (a tied
    autoencoder's decoder). Works before shapes are known and survives materialization.

    >>> tie(net, net[1], net[2])
    >>> tie(net, "0.weight", "3.weight", transpose=True)
    """
    st = model._st
    pairs = _tie_pairs(model, a, b, transpose)
    plans = [_check_tie(st, x, y, transpose) for x, y in pairs]  # raises before any change
    for root, alias_root, t in plans:
        _apply_tie(st, root, alias_root, t)


def _as_target(model: Model, x: Any) -> Param | Model:
    if isinstance(x, (Param, Model)):
        return x
    if isinstance(x, str):
        st = model._st
        if x in st.slots or x in st.aliases:
            return Param(st, x)
        return model[x] if x else model
    raise TypeError(f"tie takes parameters or layers (Param, Model handle or name), got "
                    f"{type(x).__name__}.")


def _tie_pairs(model: Model, a: Any, b: Any, transpose: bool) -> list[tuple[str, str]]:
    ta, tb = _as_target(model, a), _as_target(model, b)
    if isinstance(ta, Param) and isinstance(tb, Param):
        return [(ta.name, tb.name)]
    if isinstance(ta, Model) and isinstance(tb, Model):
        if transpose:
            raise TieError(f"transpose=True ties single parameters, not layers "
                           f"('{ta.path}', '{tb.path}'): tie their weights by name, e.g. "
                           f"tie(net, '{ta.path}.weight', '{tb.path}.weight', transpose=True).")
        pa, pb = ta._node.params, tb._node.params
        if not pa or set(pa) != set(pb):
            raise TieError(f"Layers '{ta.path}' ({ta._node.kind}: {sorted(pa)}) and "
                           f"'{tb.path}' ({tb._node.kind}: {sorted(pb)}) do not have the same "
                           f"parameters. Tie single parameters instead.")
        return [(pa[k], pb[k]) for k in pa]
    raise TieError("tie takes two parameters or two layers, not one of each.")


def _check_tie(st: ModelState, a: str, b: str, transpose: bool) -> tuple[str, str, bool]:
    ra, ta = st.resolve(a)
    rb, tb = st.resolve(b)
    t = transpose ^ ta ^ tb  # b's root must be (a's root)ᵀ^t
    if ra == rb:
        if t:
            raise TieError(f"'{a}' and '{b}' are already one storage; they cannot also be "
                           f"each other's transpose.")
        return ra, rb, False
    sa, sb = st.refresh(st.slots[ra]), st.refresh(st.slots[rb])
    shape_a = sa.shape if not t or sa.shape is None else tuple(reversed(sa.shape))
    if (sa.dtype, sa.trainable) != (sb.dtype, sb.trainable):
        raise TieError(f"Cannot tie '{a}' ({sa.dtype}, trainable={sa.trainable}) with '{b}' "
                       f"({sb.dtype}, trainable={sb.trainable}): both must agree.")
    if _unify(shape_a, sb.shape) is False:
        how = " transposed" if t else ""
        raise TieError(f"Cannot tie '{a}' of shape {fmt_shape(sa.shape)}{how} with '{b}' of "
                       f"shape {fmt_shape(sb.shape)}: the shapes differ. Tie parameters of "
                       f"equal shapes{', or pass transpose=True' if not t else ''}.")
    if t and sa.shape is not None and len(sa.shape) != 2:
        raise TieError(f"transpose=True needs 2-D parameters; '{a}' has shape "
                       f"{fmt_shape(sa.shape)}.")
    return ra, rb, t


def _unify(x: Shape | None, y: Shape | None) -> Shape | None | bool:
    """The shape both describe, None if unknown, False if they contradict."""
    if x is None or y is None:
        return x if y is None else y
    if len(x) != len(y) or any(i is not None and j is not None and i != j for i, j in zip(x, y)):
        return False
    return tuple(i if i is not None else j for i, j in zip(x, y))


def _apply_tie(st: ModelState, root: str, old_root: str, t: bool) -> None:
    if root == old_root:
        return
    sa, sb = st.slots[root], st.slots.pop(old_root)
    shape_b = sb.shape if not t or sb.shape is None else tuple(reversed(sb.shape))
    sa.shape = _unify(sa.shape, shape_b) or sa.shape  # type: ignore[assignment]
    carry = None
    if sb.state == MATERIALIZED and sa.state != MATERIALIZED:
        carry = st.backend.read(st.native, sb.ref)  # the only values there are: keep them
    both_ready = sa.state == sb.state and sa.state in (ABSTRACT, MATERIALIZED)
    st.aliases[old_root] = Alias(root, t, native=False, ref=sb.ref, carry=carry)
    for name, alias in st.aliases.items():  # b's other names now follow a's storage
        if alias.root == old_root and name != old_root:
            alias.root, alias.transpose = root, alias.transpose ^ t
    if both_ready:
        st.native = st.backend.share(st.native, sa.ref, sb.ref, t)


def _apply_pending_ties(st: ModelState) -> None:
    for alias in st.aliases.values():
        if alias.ref is None:  # one native layer used twice: nothing to re-point
            continue
        root = st.slots[alias.root]
        shape, state = st.backend.status(st.native, alias.ref)
        if state == DEFERRED or root.state == DEFERRED:
            continue
        if alias.carry is not None and root.state == MATERIALIZED:
            value = alias.carry.T if alias.transpose else alias.carry
            st.native = st.backend.write(st.native, root.ref, np.ascontiguousarray(value))
            root.initialized, alias.carry = True, None
        st.native = st.backend.share(st.native, root.ref, alias.ref, alias.transpose)


# ---- materialize ------------------------------------------------------------------------
def materialize(model: Model, *inputs: Any, input_shape: Any = None,
                abstract: bool = False) -> Model:
    """Infer every shape and fill every parameter with its registered initializer, once.

    Give example inputs or ``input_shape`` (batch first). With ``abstract=True`` shapes are
    inferred without allocating parameter memory; a later ``materialize(net)`` allocates.
    The first ``net(X)`` calls this implicitly. Returns the model.

    >>> materialize(net, input_shape=(1, 20), abstract=True)
    """
    st = model._st
    shapes = _input_shapes(inputs, input_shape)
    layer_inputs, param_shapes = _trace(st, shapes) if shapes and st.spec is not None else ({}, {})
    slots = [st.refresh(s) for s in st.slots.values()]
    if not shapes and any(s.state == DEFERRED for s in slots):
        deferred = [s.name for s in slots if s.state == DEFERRED]
        raise InputShapeError(f"Parameters {', '.join(map(repr, deferred[:4]))} have unknown "
                              f"shapes: pass example inputs, materialize(net, X), or "
                              f"input_shape=(batch, features).")
    target = ABSTRACT if abstract else MATERIALIZED
    if all(s.state == target or s.state == MATERIALIZED for s in slots):
        return model
    todo = {s.name: (s, s.reg) for s in slots
            if not s.initialized and s.reg is not None and not abstract}
    values: dict[str, np.ndarray | None] = {}
    for name, (slot, reg) in todo.items():  # user code runs before any change, shapes known
        if param_shapes.get(name) is not None and not _builtin(reg):
            values[name] = _values(st, _with_shape(slot, param_shapes[name]), reg)
    skip = frozenset(n for n, (_, reg) in todo.items()  # filled below: the framework need not
                     if reg.init is not None and (n in values or _builtin(reg)))
    request = Materialization(
        inputs=tuple(inputs) if inputs else None, input_shapes=shapes, abstract=abstract,
        layer_inputs=layer_inputs or None, param_shapes=param_shapes or None,
        skip_defaults=skip)
    st.native = st.backend.materialize(st.native, request)
    for slot in st.slots.values():
        st.refresh(slot)
    _apply_pending_ties(st)
    for name, (slot, reg) in todo.items():  # one at a time: peak memory stays one parameter
        value = values.pop(name) if name in values else _values(st, slot, reg)
        if value is not None:
            _write_values(st, {name: value})
        slot.initialized = True
    return model


def _with_shape(slot: Slot, shape: Shape) -> Slot:
    copy = Slot(**{**vars(slot)})
    copy.shape = shape
    return copy


def _input_shapes(inputs: tuple[Any, ...], input_shape: Any) -> tuple[Shape, ...]:
    if inputs:
        return tuple(tuple(int(d) for d in (x.shape if hasattr(x, "shape") else np.shape(x)))
                     for x in inputs)
    if input_shape is None:
        return ()
    if all(isinstance(d, int) for d in input_shape):
        return (tuple(input_shape),)
    return tuple(tuple(s) for s in input_shape)


def _trace(st: ModelState, shapes: tuple[Shape, ...]) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """Per-layer input shapes and per-storage shapes; raises if anything contradicts."""
    traced = nn.trace(st.spec, shapes[0])  # type: ignore[arg-type]
    layer_inputs, param_shapes = {}, {}
    for path, (in_shape, pshapes) in traced.items():
        if pshapes:
            layer_inputs[path] = in_shape
        node = st.nodes[path]
        for local, shape in pshapes.items():
            root, t = st.resolve(node.params[local])
            shape = tuple(reversed(shape)) if t else shape
            known = st.refresh(st.slots[root]).shape
            before = param_shapes.get(root, known)
            if _unify(before, shape) is False:
                msg = _mismatch(node, local, before, shape, in_shape)
                if root != node.params[local]:
                    msg += (f" Its {local} is tied to '{root}' (one storage for every use), so "
                            f"every use must see inputs of the same size.")
                raise InputShapeError(msg)
            param_shapes[root] = shape
    return layer_inputs, param_shapes


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


# ---- compute ----------------------------------------------------------------------------
def forward(model: Model, *inputs: Any, training: bool = False) -> Any:
    """``net(X)``: materializes on the first call, checks input sizes, runs the backend."""
    st = model._st
    if model.path:
        raise UnsupportedError(f"Call the whole model, not layer '{model.path}'.")
    if not st.all_materialized():
        materialize(model, *inputs)
    elif st.spec is not None:
        _trace(st, _input_shapes(inputs, None))
    out, st.native = st.backend.forward_with_state(st.native, inputs, training)
    return out


def gradients(model: Model, *inputs: Any, loss: Callable[[Any], Any] | None = None
              ) -> dict[str, np.ndarray]:
    """Gradient of ``loss(net(*inputs))`` (default: the sum of outputs) for every trainable
    parameter, by canonical name, as numpy. Tied uses add up. Also stored as ``Param.grad``.

    >>> g = gradients(net, X)
    >>> g["1.weight"].shape
    (1, 8)
    """
    st = model._st
    if "gradients" not in st.backend.capabilities:
        raise UnsupportedError(f"Backend {st.backend.name!r} cannot compute gradients.")
    if not st.all_materialized():
        materialize(model, *inputs)
    refs = {n: s.ref for n, s in st.slots.items() if s.trainable}
    grads = st.backend.gradients(st.native, inputs, loss, refs)
    for name, g in grads.items():
        st.slots[name].grad = g
    return {n: g for n, g in grads.items()}
