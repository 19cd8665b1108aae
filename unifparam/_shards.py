"""A sharded value's blocks between canonical and native layout, for adapters whose
framework places shards by index (jax: ``make_array_from_callback``, ``addressable_shards``).

``to_native`` is the layout permutation: native dimension ``j`` holds canonical dimension
``to_native[j]`` (a Keras or Flax kernel ``(in, out)``: ``(1, 0)``; None: the same layout).

    >>> import numpy as np
    >>> make = native_shard_maker(lambda index: np.arange(6.0).reshape(2, 3)[index], (1, 0))
    >>> make((slice(0, 3), slice(0, 1))).tolist()       # native (3, 2): its first column
    [[0.0], [1.0], [2.0]]
    >>> native_order(("model", None), (1, 0))
    (None, 'model')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._buffers import to_layout
from ._lazy import np

Index = tuple[slice, ...]


def _canonical(index: Sequence[slice], to_native: Sequence[int] | None) -> Index:
    if to_native is None:
        return tuple(index)
    out: list[slice] = [slice(None)] * len(index)
    for j, s in enumerate(index):
        out[to_native[j]] = s
    return tuple(out)


def native_order(per_dim: Sequence[Any], to_native: Sequence[int] | None) -> tuple[Any, ...]:
    """Something given per canonical dimension (a placement: a mesh axis or None each; a
    shape) in native dimension order."""
    return tuple(per_dim) if to_native is None else tuple(per_dim[i] for i in to_native)


def native_shard_maker(block: Callable[[Index], Any], to_native: Sequence[int] | None,
                       dtype: Any = None) -> Callable[[Index], Any]:
    """The callback making each native block from ``block`` (canonical index -> canonical
    values): the index mapped, the values transposed; a block replicated on several
    devices is made once."""
    made: dict[str, Any] = {}
    perm = None if to_native is None or list(to_native) == sorted(to_native) else \
        tuple(to_native)

    def shard(index: Index) -> Any:
        key = repr(index)
        if key not in made:
            made[key] = to_layout(block(_canonical(index, to_native)), perm, dtype)
        return made[key]
    return shard


def canonical_shards(shards: Iterable[Any], to_native: Sequence[int] | None
                     ) -> list[tuple[Index, Any]]:
    """``(canonical index, canonical numpy block)`` of the first replica of each shard
    (objects with ``index``, ``data`` and ``replica_id``, as jax's ``addressable_shards``)."""
    back = None if to_native is None else tuple(int(i) for i in np.argsort(to_native))
    return [(_canonical(s.index, to_native),
             np.asarray(s.data) if back is None else np.asarray(s.data).transpose(back))
            for s in shards if s.replica_id == 0]
