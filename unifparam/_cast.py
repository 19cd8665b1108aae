"""Portable casts: a model's parameters to another dtype, the same way on every backend.

    >>> unifparam.cast(net, "bfloat16")                           # every parameter
    >>> unifparam.cast(net, {"*.norm.*": "float32", "*": "bfloat16"})  # first match wins
    >>> net = unifparam.build(spec, dtype="bfloat16")             # the same, at build

Names, ties, trainable flags and placement are kept; values are rounded to nearest even.
Everything is checked before the first change (unknown dtypes, patterns that match
nothing, a dtype the backend cannot store), so a failed cast leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._backend import DEFERRED
from ._locking import serialized
from ._model import Model
from .dtypes import FLOATS, Policy, policies
from .errors import ArgumentValueError, UnsupportedError


@serialized
def cast(model: Model, dtype: Any) -> Model:
    """Store every parameter of ``model`` (or of one layer handle) in ``dtype``: a dtype
    (``"bfloat16"``, ``torch.float16``, ...), a policy (``"mixed_bfloat16"``: float32
    storage) or a dict of name pattern -> either (unmatched parameters keep float32).
    Returns the model.

    >>> unifparam.cast(net, "float16")
    >>> {p.dtype for p in unifparam.params(net).values()}
    {'float16'}
    """
    if not isinstance(model, Model):
        raise ArgumentValueError(f"unifparam.cast takes a model handle from unifparam.build, "
                                 f"got {type(model).__name__}.")
    st = model._st
    roots = st.roots_under(model._node)
    plan = policies(dtype, {r: st.names_of(r) for r in roots})
    _check(st, plan)
    if not model.path:  # refused before any parameter changes
        compute = _compute(dtype, plan)
        st.call("set_compute", compute, compute is not None and compute != "float32" and
                all(p.mixed for p in plan.values()))
    for root, policy in plan.items():
        slot = st.slots[root]
        if st.state_of(root) != DEFERRED and st.dtype(root) != policy.storage:
            st.call("cast", slot.ref, policy.storage)
        slot.dtype = policy.storage
    return model


def _compute(dtype: Any, plan: dict[str, Policy]) -> str | None:
    """The model-wide compute dtype: one policy's (``"bfloat16"`` computes in bfloat16,
    ``"mixed_bfloat16"`` too over float32 storage); None for per-pattern dtypes (each
    layer as its framework promotes). A mixed policy must apply to the whole model."""
    if not isinstance(dtype, Mapping):
        return next(iter(plan.values())).compute if plan else None
    mixed = sorted({p.compute for p in plan.values() if p.mixed})
    if mixed:
        raise ArgumentValueError(
            f"A mixed policy ({', '.join(mixed)} compute over float32 storage) applies to "
            f"a whole model: pass it alone, e.g. unifparam.cast(net, 'mixed_bfloat16'), "
            f"not per pattern.")
    return None


def _check(st: Any, plan: dict[str, Policy]) -> None:
    supported = st.backend.storage_dtypes
    for root, policy in plan.items():
        if policy.storage not in supported:
            raise UnsupportedError(
                f"The {st.backend.configuration} backend cannot store parameter '{root}' in "
                f"{policy.storage}: it stores "
                f"{', '.join(d for d in FLOATS if d in supported)}. Pick one of those.")
        have = st.slots[root].dtype
        if policy.storage != have and (have not in FLOATS or policy.storage not in FLOATS):
            raise ArgumentValueError(
                f"Cannot cast parameter '{root}' from {have} to {policy.storage}: casts are "
                f"between floating dtypes ({', '.join(FLOATS)}). Leave integer and bool "
                f"parameters out with a pattern, e.g. {{'*.weight': {policy.storage!r}}}.")
