"""Checkpoints of sharded models in Hugging Face's sharded layout, written and read by block.

A directory holds ``model-00001-of-0000N-<hash>.safetensors`` files and
``model.safetensors.index.json``, as ``transformers`` reads them: canonical names, canonical
layout, each storage once. When this process holds every value (one process, or one jax
controller over many devices), each shard goes through the one checkpoint writer, with its
guarantees (digests, atomic save of the whole directory, ties and trainability recorded;
see :mod:`unifparam._ckptdir`). When processes each own part of a value (torch ranks), each
writes the blocks it owns at their byte offsets into shared files, so no process holds a
parameter it does not own; those files record no digests and load as unverified. Loading
reads through the one checkpoint reader, each block as needed, into a sharded model
(``mesh=``, ``layout=``) or an unsharded one, any backend.

    >>> unifparam.save_sharded(net, "ckpt/")             # every rank calls it
    >>> unifparam.load_sharded(fresh, "ckpt/", mesh=mesh, layout=layout)

With several processes, wait for all of them (``torch.distributed.barrier()``) before
reading the directory.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import _ckptfile
from . import dtypes as _dtypes
from ._backend import MATERIALIZED
from ._lazy import np
from ._locking import serialized
from .errors import CheckpointNotFoundError, InputShapeError

INDEX = "model.safetensors.index.json"


class _Partial(Exception):
    """This process does not hold every value of a storage: the ranks write together."""


@serialized
def save_sharded(model: Any, directory: str | os.PathLike[str], *,
                 max_shard_bytes: int = 5 << 30) -> None:
    """Write ``model``'s storages to ``directory`` in Hugging Face's sharded layout.

    Each process writes only the blocks it owns; a sharded or unsharded model, any backend.
    """
    from . import _ckptdir
    from .checkpoint import _root_state, contents
    st = _root_state(model, "save_sharded")
    if not st.all_in(MATERIALIZED):
        raise InputShapeError("save_sharded needs a materialized model: call "
                              "unifparam.materialize(net, X) first.")
    directory = _ckptfile._fspath(directory, "save")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointNotFoundError(f"Cannot save to {directory}: it is a file, not a "
                                      f"directory. Give a directory path (it is created).")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise _ckptfile._os_error(directory, e, "save") from None
    arrays, metadata = contents(st, _whole)
    try:
        _ckptdir.write_sharded(directory, arrays, metadata, max_shard_bytes)
    except _Partial:
        _save_together(st, directory, max_shard_bytes)


def _whole(st: Any, name: str) -> Any:
    """The storage's value assembled from the blocks this process owns (all of them, or
    :class:`_Partial`)."""
    from .init import block_slices

    def fetch() -> Any:
        shape = tuple(int(d) for d in st.status(name)[0])
        blocks = st.backend.owned_blocks(st.native, st.slots[name].ref)
        if len(blocks) == 1 and tuple(np.shape(blocks[0][1])) == shape:
            return np.asarray(blocks[0][1], dtype=st.slots[name].dtype)
        out = np.empty(shape, st.slots[name].dtype)
        covered = 0
        for index, block in blocks:
            out[block_slices(shape, index)] = block
            covered += int(np.size(block))
        if covered != out.size:
            raise _Partial(name)
        return out
    return fetch


def _save_together(st: Any, directory: str, max_shard_bytes: int) -> None:
    """Every rank writes its own blocks into the same files, at their byte offsets."""
    from ._ckptdir import _groups, _remove_replaced
    from .init import _runs, block_slices
    shapes = {r: tuple(int(d) for d in st.status(r)[0]) for r in st.slots}
    plan = {r: (st.dtype(r), shapes[r], None) for r in st.slots}
    groups = _groups(plan, max_shard_bytes)
    weight_map = {}
    for i, names in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        offsets, at = {}, 0
        for name in names:
            nbytes = int(np.prod(shapes[name], dtype=np.int64)) * \
                _dtypes.numpy_dtype(plan[name][0]).itemsize
            offsets[name], at = (at, at + nbytes), at + nbytes
        head = _ckptfile._header({n: plan[n] for n in names}, offsets,
                                 {"format": "pt", "writer": "unifparam.save_sharded"}, {})
        fd = os.open(os.path.join(directory, fname), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, len(head) + at)  # every process: the same size, holes filled below
            os.pwrite(fd, head, 0)
            for name in names:
                weight_map[name] = fname
                item = _dtypes.numpy_dtype(plan[name][0]).itemsize
                for index, block in st.backend.owned_blocks(st.native, st.slots[name].ref):
                    slices = block_slices(shapes[name], index)
                    data = np.ascontiguousarray(block, dtype=_dtypes.numpy_dtype(
                        plan[name][0])).reshape(-1)
                    done = 0
                    for start, length in _runs(shapes[name], slices):
                        os.pwrite(fd, data[done:done + length].tobytes(),
                                  len(head) + offsets[name][0] + start * item)
                        done += length
        finally:
            os.close(fd)
    total = sum(int(np.prod(s, dtype=np.int64)) * _dtypes.numpy_dtype(plan[n][0]).itemsize
                for n, s in shapes.items())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    tmp = os.path.join(directory, f".{INDEX}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, INDEX))
    _remove_replaced(directory, set(weight_map.values()))


@serialized
def load_sharded(model: Any, directory: str | os.PathLike[str], *, mesh: Any = None,
                 layout: Any = None, cast: bool = True) -> Any:
    """Load a checkpoint directory (or file) into ``model``, reading only the blocks it needs.

    Storages not materialized yet are planned from the files' shapes (sharded with
    ``mesh``/``layout``); materialized ones are overwritten whole. :func:`unifparam.load`
    with placement: the same checks, the same refusals, the same casts (``cast=False``
    refuses a file dtype other than the model's).
    """
    from .checkpoint import load_into
    load_into(model, directory, mesh=mesh, layout=layout, cast=cast)
    return model
