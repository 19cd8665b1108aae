"""Keep the core in step with what the framework does on its own.

A model handed to unifparam is still the user's native model: calling it (``m(X)``, a
trainer's step) sizes lazy layers with the framework's default values, and freezing a
layer (torch ``requires_grad_(False)``, Keras ``layer.trainable = False``) changes what
trains. The core never caches either fact:

- :func:`watch` asks the adapter to call back right after the framework gives storages
  memory by itself, before that first call computes: initializers registered while the
  shapes were unknown are applied there, exactly once (:func:`apply_pending`);
- :func:`check` runs at the start of every verb: trainable flags are read again from the
  framework, and a registered initializer that no callback could apply (an adapter
  without :meth:`~unifparam.Backend.watch`) is reported by a typed
  :class:`~unifparam.InitializerSkippedWarning`, never dropped silently.

    >>> up.initialize(net, init.Constant(0.25), seed=5)   # doctest: +SKIP
    >>> net.native(X)            # torch materializes; the callback writes 0.25 before forward
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ._backend import MATERIALIZED
from .errors import InitializerSkippedWarning, fmt_names

if TYPE_CHECKING:
    from ._state import ModelState


#: adopted model -> its adapter's structure fingerprint when last listed
_LISTED: weakref.WeakKeyDictionary[ModelState, Hashable] = weakref.WeakKeyDictionary()
#: model -> the storages that had memory when it was built (a spec layer whose sizes are
#: all given is built eagerly): the framework did not materialize those behind the core's
#: back, so their registered initializers (a layer's own weight_init) are not "skipped"
_BUILT_WITH_MEMORY: weakref.WeakKeyDictionary[ModelState, frozenset[str]] = \
    weakref.WeakKeyDictionary()


def watch(st: ModelState) -> None:
    """Register with the adapter the callback that applies pending initializers when the
    framework materializes storages itself (holds the state weakly); note the adopted
    model's structure, to see layers added to it later. Once per state: a copy (pickle,
    deepcopy) is a new state, watched when its handle is restored."""
    if st in _BUILT_WITH_MEMORY:
        return
    _BUILT_WITH_MEMORY[st] = frozenset(n for n in st.slots if st.state_of(n) == MATERIALIZED)
    st.backend.watch(st.native, settler(st))
    if st.spec is None:
        mark = st.backend.structure(st.native)
        if mark is not None:
            _LISTED[st] = mark


def settler(st: ModelState) -> Callable[[], None]:
    """The callback :func:`watch` hands the adapter: :func:`apply_pending` on ``st``."""
    ref = weakref.ref(st)

    def settle() -> None:
        state = ref()
        if state is not None:
            apply_pending(state)
    return settle


def pending(st: ModelState) -> list[str]:
    """Roots with a registered initializer not applied yet whose storage has memory now.

    A default nobody chose (``source="default"``: a block's or ``set_seed``'s) is not
    pending: the framework's own values stand in for it, as the plan's do. Nor is a
    storage that had memory when the model was built: the core fills it at the next verb."""
    built = _BUILT_WITH_MEMORY.get(st, frozenset())
    return [n for n, s in st.slots.items()
            if s.reg is not None and s.reg.source != "default" and not s.initialized
            and n not in built and st.state_of(n) == MATERIALIZED]


def apply_pending(st: ModelState) -> list[str]:
    """Write every pending initializer's values (once); return the roots written.

    User initializers run first, so one that fails raises before any value changes."""
    from ._plan import contiguous, producer
    names = pending(st)
    if not names:
        return []
    for layer in {st.slots[n].layer for n in names}:  # a bias's fans read its weight's shape
        for name in st.nodes[layer].params.values() if layer in st.nodes else ():
            st.status(st.resolve(name)[0])
    makes = {n: producer(st, st.slots[n], st.slots[n].reg, st.status(n)[0])  # type: ignore
             for n in names}
    for name, make in makes.items():
        if make is not None:  # None: the framework's default, which it already has
            st.call("write", st.slots[name].ref, contiguous(make()))
        st.slots[name].initialized = True
    return names


def check(st: ModelState, listing: bool = True) -> None:
    """At a verb's start: trainable flags and an adopted model's layers read from the
    framework again (``listing``; a forward needs neither, and skips that walk of the
    model on every call); initializers the framework's own materialization skipped are
    reported (values kept: they may have been trained since)."""
    watch(st)  # a state copied without its handle (a pickled Param) is watched here
    if listing:
        refresh_structure(st)
        refresh_trainable(st)
    skipped = pending(st)
    if not skipped:
        return
    for name in skipped:  # reported once: the values the framework gave are kept
        st.slots[name].initialized = True
    shown = fmt_names(skipped)
    warnings.warn(
        f"Parameters {shown} were materialized by the {st.backend.configuration} model "
        f"itself (called natively before unifparam sized them), with the framework's "
        f"default values: the initializer registered for them was not applied. Apply it "
        f"now with unifparam.initialize(net, init, force_reinit=True), or call net(X) or "
        f"unifparam.materialize(net, X) before the native model.",
        InitializerSkippedWarning, stacklevel=3)


def refresh_trainable(st: ModelState) -> None:
    """Every storage's trainable flag as its framework says now."""
    for slot in st.slots.values():
        live = st.backend.trainable(st.native, slot.ref)
        if live is not None:
            slot.trainable = live


def refresh_structure(st: ModelState) -> None:
    """An adopted model whose adapter says its structure changed (a layer added after
    ``build``) is listed again; registrations, fill flags and explicit ties are kept."""
    if st.spec is not None:
        return
    mark = st.backend.structure(st.native)
    if mark is None:
        return
    if _LISTED.setdefault(st, mark) == mark:
        return
    from ._state import state_from_tree
    native, tree = st.backend.adopt(st.backend.native_layer(st.native, ""))
    new = state_from_tree(st.backend, native, tree)
    for name, slot in new.slots.items():
        old = st.slots.get(name)
        if old is not None:
            slot.reg, slot.initialized, slot.grad = old.reg, old.initialized, old.grad
    for name, alias in st.aliases.items():  # explicit ties: the framework does not see them
        if not alias.native and alias.root in new.slots and name in new.slots:
            del new.slots[name]
            new.aliases[name] = alias
    st.native, st.slots, st.aliases = new.native, new.slots, new.aliases
    st.root.kind, st.root.text = new.root.kind, new.root.text
    st.root.children, st.root.params = new.root.children, new.root.params
    st.nodes = {}
    st._index(st.root)  # the root handle (net) keeps its Node object
    _LISTED[st] = mark
