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

from . import _firstcall, _plan, _sync, nn
from ._backend import MATERIALIZED
from ._lazy import np
from ._locking import serialized
from ._model import Model, Param, ParamDict
from ._registry import detect, get_backend
from ._state import Registration, state_from_spec, state_from_tree
from ._ties import apply_tie, check_tie
from .errors import (
    AlreadyInitializedWarning,
    ArgumentError,
    ArgumentValueError,
    BackendNotFoundError,
    InputShapeError,
    TieError,
    UnknownNameError,
    UnsupportedError,
    fmt_names,
    fmt_shape,
)
from .init import Default, Initializer, as_initializer
from .roles import STATISTICS

Shape = nn.Shape


# ---- build ------------------------------------------------------------------------------
def build(model: Any, backend: str | None = None, *, device: Any = None,
          dtype: Any = None) -> Model:
    """A Model handle for a spec or a native model (torch Module, Keras model, Flax module).

    The backend comes from ``backend``, else the native object's type, else
    ``UNIFPARAM_BACKEND``. With ``device`` (``"gpu:0"``, docs/devices.md) parameters are
    materialized there, and a native model's existing ones are moved there. ``dtype``
    stores the parameters in that dtype, policy or per-pattern dict, as
    :func:`unifparam.cast` (default: float32 for a spec, the native model's own dtypes
    when adopted; docs/precision.md).

    >>> net = build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)), backend="torch")
    >>> half = build(nn.Sequential(nn.Dense(8)), backend="torch", dtype="bfloat16")
    """
    if device is not None:
        from ._devices import check
        be = model._st.backend if isinstance(model, Model) else \
            get_backend(backend or detect(model))
        check(be, device)  # before anything is built
        return to(build(model, backend, dtype=dtype), device)
    net = _build(model, backend)
    if dtype is not None:
        from ._cast import cast
        cast(net, dtype)
    return net


def _build(model: Any, backend: str | None) -> Model:
    if backend is not None and not isinstance(backend, str):
        raise ArgumentError(f"build(backend={backend!r}): backend must be a name (str) such as "
                            f"'torch' or 'keras:jax', got {type(backend).__name__}.")
    if isinstance(model, Model):
        return model
    if isinstance(model, type) and issubclass(model, nn.Layer):
        raise ArgumentError(f"build(model={model.__name__}): pass a layer instance, e.g. "
                            f"{model.__name__}(...), not the class.")
    if isinstance(model, nn.Layer):
        st = state_from_spec(get_backend(backend), model)
        _sync.watch(st)
        return Model(st, st.root)
    found = detect(model)
    if found is None and backend is None:
        raise BackendNotFoundError(
            f"Cannot tell which framework a {type(model).__module__}.{type(model).__qualname__} "
            f"belongs to. Pass a unifparam.nn spec, a native model, or backend='name'.")
    if found is None:
        raise ArgumentError(
            f"build(model=...) takes a unifparam.nn spec or a native model of a registered "
            f"backend, got {type(model).__module__}.{type(model).__qualname__}.")
    be = get_backend(backend or found)
    if found is not None and found != be.name:
        raise BackendNotFoundError(f"A {found} model cannot be adopted by backend {be.name!r}. "
                                   f"Use backend={found!r}.")
    if "adopt" not in be.capabilities:
        raise UnsupportedError(f"Backend {be.name!r} cannot adopt native models yet.")
    native, tree = be.adopt(model)
    st = state_from_tree(be, native, tree)
    _sync.watch(st)
    return Model(st, st.root)


# ---- params -----------------------------------------------------------------------------
@serialized
def params(model: Model) -> ParamDict:
    """Ordered mapping name -> Param of a model or layer; each storage once, ties as aliases.

    Names are relative to ``model`` (``"weight"`` for ``params(net[0])``, like torch);
    ``Param.name`` is always the full canonical name. Works before shapes are known.
    """
    st, node = model_handle(model, "params")._st, model._node
    prefix = f"{node.path}." if node.path else ""
    out = ParamDict()
    seen: set[str] = set()
    for n in st.names_under(node):
        root, _ = st.resolve(n)
        if root not in seen:
            seen.add(root)
            out[n[len(prefix):]] = Param(st, n)
    return out


# ---- initialize -------------------------------------------------------------------------
Select = str | Param | Model | Callable[[Param], bool] | Iterable[Any] | None


@serialized
def initialize(model: Model, init: Initializer | Callable | None = None, *, select: Select = None,
               force_reinit: bool = False, seed: int | None = None) -> None:
    """Register an initializer and fill every parameter whose shape is known.

    Parameters still deferred are filled when materialized, once. An initializer given for
    a model or layer fills its weights (biases 0, norm scales 1); ``select`` by name pattern
    (``"*.bias"``), Param or predicate picks exact parameters, whatever their role.
    Re-initializing a filled parameter needs ``force_reinit=True`` (else a warning, values
    kept). With ``seed``, values depend only on (seed, name, shape). A model or layer
    re-initializes its trainable parameters and running statistics; other non-trainable
    state that has values (a frozen sinusoidal table) is kept unless ``select`` names it.

    >>> initialize(net, init.XavierUniform(), select=net[0], force_reinit=True)
    """
    st = model_handle(model, "initialize")._st
    init_ = as_initializer(init)
    seed = _check_seed(seed)
    if seed is None:
        from ._convert import default_seed
        seed = default_seed()
    if not isinstance(force_reinit, bool):
        raise ArgumentError(f"initialize(force_reinit={force_reinit!r}): force_reinit must be "
                            f"True or False.")
    if init_ is None and seed is not None:
        init_ = Default()
    chosen = _select(model, select)  # name -> picked explicitly?
    kept, plan = [], {}
    for name, explicit in chosen.items():
        slot = st.slots[name]
        if not explicit and not slot.trainable and slot.role not in STATISTICS and (
                slot.initialized or st.status(name)[1] == MATERIALIZED):
            continue  # a constant table, a frozen parameter: only an explicit select
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
    ready = {}
    for name, reg in plan.items():  # user initializers run here, before any change
        shape, state = st.status(name)
        if state == MATERIALIZED:
            ready[name] = _plan.producer(st, st.slots[name], reg, shape)  # type: ignore[arg-type]
    for name, reg in plan.items():
        st.slots[name].reg = reg
    resets = [st.slots[n].ref for n, make in ready.items() if make is None]
    if resets:
        st.call("reset", resets)
    for name, make in ready.items():  # one at a time: peak memory stays one parameter
        if make is not None:
            st.call("write", st.slots[name].ref, _plan.contiguous(make()))
        st.slots[name].initialized = True
    _plan.materialize_known(st)
    if kept:
        shown = fmt_names(kept)
        warnings.warn(f"Parameters {shown} are already initialized; kept their values. Pass "
                      f"force_reinit=True to re-initialize.", AlreadyInitializedWarning,
                      stacklevel=2)


def _check_seed(seed: Any) -> int | None:
    """``seed`` as an int (None: fresh randomness); a typed error names it otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ArgumentError(f"initialize(seed={seed!r}): seed must be an int (or None), got "
                            f"{type(seed).__name__}.")
    return int(seed)


def _select(model: Model, select: Select) -> dict[str, bool]:
    st = model._st
    if select is None:
        return dict.fromkeys(st.roots_under(model._node), False)
    if isinstance(select, (Model, Param)) and select._st is not st:
        raise ArgumentValueError(f"select={select!r} belongs to another model. Select "
                                 f"parameters or layers of the model being initialized.")
    if isinstance(select, Model):
        return dict.fromkeys(st.roots_under(select._node), False)
    if isinstance(select, Param):
        return {st.resolve(select.name)[0]: True}
    if isinstance(select, str):
        import fnmatch
        prefix = f"{model.path}." if model.path else ""
        names = [n for n in st.names_under(model._node)
                 if fnmatch.fnmatchcase(n, select) or fnmatch.fnmatchcase(n[len(prefix):], select)]
        if not names:
            raise UnknownNameError(f"select={select!r} matches no parameter of "
                                   f"'{model.path or 'model'}'. Names look like "
                                   f"{next(iter(st.names_under(model._node)), '0.weight')!r}.")
        return {st.resolve(n)[0]: True for n in names}
    if callable(select):
        return {st.resolve(n)[0]: True for n, p in params(model).items() if select(p)}
    if not isinstance(select, (list, tuple, set, frozenset)):
        raise ArgumentError(f"initialize(select={select!r}): select takes a name pattern "
                            f"('*.bias'), a Param, a layer handle, a predicate or a list of "
                            f"these, got {type(select).__name__}.")
    out: dict[str, bool] = {}
    for item in select:
        for n, explicit in _select(model, item).items():
            out[n] = out.get(n, False) or explicit
    return out


# ---- tie --------------------------------------------------------------------------------
@serialized
def tie(model: Model, a: Any, b: Any, *, transpose: bool = False) -> None:
    """Make ``b`` use ``a``'s storage: writes through either are seen by both, gradients add.

    ``a`` and ``b`` are parameters (Param or name) or layers (handle or path; same-named
    parameters are tied). ``transpose=True`` makes ``b`` the transpose of ``a`` (a tied
    autoencoder's decoder). Works before shapes are known and survives materialization.

    >>> tie(net, net[1], net[2])
    >>> tie(net, "0.weight", "3.weight", transpose=True)
    """
    st = model_handle(model, "tie")._st
    if not isinstance(transpose, bool):
        raise ArgumentError(f"tie(transpose={transpose!r}): transpose must be True or False.")
    pairs = _tie_pairs(model, a, b, transpose)
    plans = [check_tie(st, x, y, transpose) for x, y in pairs]  # raises before any change
    for root, alias_root, t in plans:
        apply_tie(st, root, alias_root, t)


def _as_target(model: Model, x: Any, arg: str) -> Param | Model:
    if isinstance(x, (Param, Model)):
        if x._st is not model._st:
            raise ArgumentValueError(f"tie({arg}={x!r}): {arg} belongs to another model. Tie "
                                     f"parameters or layers of one model.")
        return x
    if isinstance(x, str):
        st = model._st
        if x in st.slots or x in st.aliases:
            return Param(st, x)
        if not x:
            return model
        try:
            return model[x]
        except UnknownNameError as e:
            raise UnknownNameError(f"tie({arg}={x!r}): no parameter or layer of that name. {e}"
                                   ) from None
    raise ArgumentError(f"tie({arg}={x!r}): {arg} must be a parameter or a layer (Param, layer "
                        f"handle or its name such as '0.weight' or '0'), got "
                        f"{type(x).__name__}.")


def _describe(x: Param | Model) -> str:
    return f"parameter '{x.name}'" if isinstance(x, Param) else f"layer '{x.path}'"


def _tie_pairs(model: Model, a: Any, b: Any, transpose: bool) -> list[tuple[str, str]]:
    ta, tb = _as_target(model, a, "a"), _as_target(model, b, "b")
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
    raise TieError(f"tie takes two parameters or two layers, not one of each: a is "
                   f"{_describe(ta)}, b is {_describe(tb)}. Pass two parameters (Param or name "
                   f"such as '0.weight') or two layers.")


# ---- materialize ------------------------------------------------------------------------
@serialized
def materialize(model: Model, *inputs: Any, input_shape: Any = None,
                abstract: bool = False, mesh: Any = None, layout: Any = None,
                device: Any = None) -> Model:
    """Infer every shape and fill every parameter with its registered initializer, once.

    Give example inputs or ``input_shape`` (batch first). With ``abstract=True`` shapes are
    inferred without allocating parameter memory; a later ``materialize(net)`` allocates.
    The first ``net(X)`` calls this implicitly. Returns the model.

    ``mesh`` (the framework's own: ``jax.sharding.Mesh``, torch ``DeviceMesh``) and
    ``layout`` (canonical-name pattern -> a mesh axis or None per dimension, first match
    wins, unmatched replicated) shard the parameters; each device makes only its own
    block of seeded values, equal bit for bit to the unsharded ones (docs/sharding.md).

    ``device`` (``"cpu"``, ``"gpu:1"``, ``"cuda:0"`` or the framework's device object) is
    where parameters get their memory; an abstract model remembers it. Parameters already
    materialized elsewhere are moved there (:func:`unifparam.to`, docs/devices.md).

    >>> materialize(net, input_shape=(1, 20), abstract=True)
    >>> materialize(net, X, mesh=mesh, layout={"*.weight": ("model", None)})
    >>> materialize(net, X, device="gpu")
    """
    st = model_handle(model, "materialize")._st
    if device is None:
        _firstcall.materialize(st, inputs, input_shape, abstract, mesh, layout)
        return model
    from ._devices import check
    name = check(st.backend, device)
    if mesh is not None:
        raise ArgumentError("materialize(device=..., mesh=...): a mesh places parameters on "
                            "its own devices; pass one of them.")
    meta = name == "meta"  # torch's device without memory: abstract materialization
    before, st.device = st.device, (st.device if meta else name)
    try:
        _firstcall.materialize(st, inputs, input_shape, abstract or meta, mesh, layout)
    except BaseException:
        st.device = before
        raise
    if any(st.state_of(r) == MATERIALIZED for r in st.slots) and (meta or st.placed_on() != name):
        to(model, name)
    return model


@serialized
def to(model: Model, device: Any) -> Model:
    """Move a built model's parameters and buffers to ``device``; returns the model.

    Names, ties, trainable flags, dtypes and values are kept, and the handle reads
    everything from the moved storages. Parameters without memory yet (deferred or
    abstract) are materialized there later. Moving to torch's ``"meta"`` drops values:
    the next ``materialize`` refills them from their registered initializers.

    >>> unifparam.to(net, "cpu")                  # doctest: +SKIP
    >>> net.device                                # doctest: +SKIP
    'cpu:0'
    """
    from ._devices import check
    st = model_handle(model, "to")._st
    name = check(st.backend, device)
    held = [r for r in st.slots if st.state_of(r) == MATERIALIZED]
    if held:
        st.call("move", name)
    for root in held:
        if st.state_of(root) != MATERIALIZED:  # on meta: refilled by the next materialize
            st.slots[root].initialized = False
    st.device = None if name == "meta" else name
    return model


def _check_arity(loss: Callable[..., Any] | None) -> None:
    """A typed error if ``loss`` cannot be called with one argument (the output)."""
    import inspect
    if loss is None or not callable(loss):
        return
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call decides
        return
    try:
        signature.bind(None)
    except TypeError:
        raise ArgumentError(f"gradients(loss={getattr(loss, '__name__', loss)!r}): loss "
                            f"takes {signature}, but it is called with one argument, the "
                            f"model's output: loss=lambda y: (y ** 2).mean().") from None


def _scalar(loss: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``loss`` checked to return one number (any framework's scalar tensor)."""
    def checked(out: Any) -> Any:
        value = loss(out)
        if isinstance(value, (int, float, np.generic)):
            raise ArgumentError(
                f"gradients(loss={getattr(loss, '__name__', loss)!r}) returned the plain "
                f"{type(value).__name__} {value!r}, which carries no gradient: compute it "
                f"from the output with the framework's or unifparam.ops functions, e.g. "
                f"loss=lambda y: (y ** 2).mean().")
        if value is None or not hasattr(value, "shape") and not isinstance(value, (int, float)):
            raise ArgumentError(f"gradients(loss={getattr(loss, '__name__', loss)!r}) returned "
                                f"{type(value).__name__}; it must return a scalar of the "
                                f"output, e.g. loss=lambda y: (y ** 2).mean().")
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) > 1 or shape and shape[0] != 1:
            raise ArgumentValueError(
                f"gradients(loss={getattr(loss, '__name__', loss)!r}) returned shape "
                f"{fmt_shape(shape)}; it must return a scalar. Reduce it, e.g. with .sum() "
                f"or .mean().")
        return value
    return checked


def model_handle(model: Any, verb: str) -> Model:
    if not isinstance(model, Model):
        raise ArgumentError(f"unifparam.{verb} takes a model handle from unifparam.build, "
                            f"got {type(model).__name__}. Wrap native models: "
                            f"unifparam.build(native).")
    _sync.check(model._st)  # what the native model did by itself since the last verb
    return model


# ---- compute ----------------------------------------------------------------------------
@serialized
def gradients(model: Model, *inputs: Any, loss: Callable[[Any], Any] | None = None,
              training: bool = False) -> dict[str, np.ndarray]:
    """Gradient of ``loss(net(*inputs))`` (default: the sum of outputs) for every trainable
    parameter, by canonical name, as numpy. Tied uses add up. Also stored as ``Param.grad``.
    For a layer handle (``net[0]``) the whole model runs and only that layer's parameters
    are returned, named relative to it (as ``params(net[0])``). ``training=True`` runs the
    forward pass as the framework trains (dropout active, batch statistics used and the
    running statistics updated, as ``net(x, training=True)``); the default is inference.

    >>> g = gradients(net, X)
    >>> g["1.weight"].shape
    (1, 8)
    """
    st = model_handle(model, "gradients")._st
    _check_arity(loss)
    if "gradients" not in st.backend.capabilities:
        raise UnsupportedError(f"Backend {st.backend.name!r} cannot compute gradients.")
    if not inputs:
        raise InputShapeError("gradients needs the model's input: gradients(net, X).")
    if not isinstance(training, bool):
        raise ArgumentError(f"gradients(training={training!r}): training must be True or "
                            f"False.")
    if loss is not None and not callable(loss):
        raise ArgumentError(f"gradients(loss={loss!r}): loss must be a function of the "
                            f"output returning a scalar, got {type(loss).__name__}.")
    _plan.input_shapes(inputs, None, _plan.receiver(st))  # typed errors for non-arrays
    if not st.all_in(MATERIALIZED):
        _firstcall.materialize(st, inputs, None, False)
    elif st.spec is not None:
        _plan.check_call(st, inputs)
    roots = st.roots_under(model._node)
    refs = {n: st.slots[n].ref for n in roots if st.slots[n].trainable}
    fn = None if loss is None else _scalar(loss)
    if not refs:  # all frozen: nothing to differentiate
        grads = {}
    elif training:  # the forward's state updates (running statistics) come back with them
        grads, st.native = st.backend.gradients(st.native, inputs, fn, refs, training=True)
    else:
        grads = st.backend.gradients(st.native, inputs, fn, refs)
    for name, g in grads.items():
        st.slots[name].grad = g
    prefix = f"{model.path}." if model.path else ""
    return {n.removeprefix(prefix): g for n, g in grads.items()}
