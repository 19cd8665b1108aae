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
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._backend import MATERIALIZED
from .errors import InitializerSkippedWarning

if TYPE_CHECKING:
    from ._state import ModelState


def watch(st: ModelState) -> None:
    """Register with the adapter the callback that applies pending initializers when the
    framework materializes storages itself (holds the state weakly)."""
    st.backend.watch(st.native, settler(st))


def settler(st: ModelState) -> Callable[[], None]:
    """The callback :func:`watch` hands the adapter: :func:`apply_pending` on ``st``."""
    ref = weakref.ref(st)

    def settle() -> None:
        state = ref()
        if state is not None:
            apply_pending(state)
    return settle


def pending(st: ModelState) -> list[str]:
    """Roots with a registered initializer not applied yet whose storage has memory now."""
    return [n for n, s in st.slots.items()
            if s.reg is not None and not s.initialized and st.state_of(n) == MATERIALIZED]


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


def check(st: ModelState) -> None:
    """At a verb's start: trainable flags read from the framework again; initializers the
    framework's own materialization skipped are reported (values kept: they may have
    been trained since)."""
    refresh_trainable(st)
    skipped = pending(st)
    if not skipped:
        return
    for name in skipped:  # reported once: the values the framework gave are kept
        st.slots[name].initialized = True
    shown = ", ".join(repr(n) for n in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
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
