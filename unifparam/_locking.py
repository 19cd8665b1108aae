"""One lock per model: the verbs on one model run one at a time, whichever thread calls them.

Every verb that reads or changes a model's values (initialize, tie, materialize, load,
save, ``net(X)``, gradients, ``p[...] = v``, ``p.numpy()``) holds its model's lock for the
whole call, so a forward never sees a half-initialized model and a saved file is one
consistent snapshot. The lock is re-entrant: a verb may call verbs, and a block's forward,
an initializer or a loss run inside the verb may use the same model.

    >>> @serialized
    ... def initialize(model, init=None): ...   # runs under lock_of(model._st)
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ._state import ModelState

F = TypeVar("F", bound=Callable[..., Any])

_locks: weakref.WeakKeyDictionary[ModelState, threading.RLock] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def lock_of(state: ModelState) -> threading.RLock:
    """The re-entrant lock of one model (shared by its sub-layer handles and Params).

    >>> with lock_of(net._st):   # several verbs as one step, e.g. read-modify-write
    ...     unifparam.initialize(net, seed=1, force_reinit=True); unifparam.save(net, path)
    """
    with _guard:
        lock = _locks.get(state)
        if lock is None:
            lock = _locks[state] = threading.RLock()
        return lock


def serialized(fn: F) -> F:
    """``fn(model_or_param, ...)`` run under its model's lock; other first arguments (a
    wrong type the verb itself refuses) run unlocked.

    >>> @serialized
    ... def save(model, path): ...
    """
    @functools.wraps(fn)
    def locked(target: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = object.__getattribute__(target, "_st")
        except AttributeError:
            return fn(target, *args, **kwargs)
        if not isinstance(state, ModelState):
            return fn(target, *args, **kwargs)
        with lock_of(state):
            return fn(target, *args, **kwargs)
    return locked  # type: ignore[return-value]
