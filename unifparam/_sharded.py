"""Checkpoints of sharded models in Hugging Face's sharded layout, written and read by block.

A directory holds ``model-00001-of-0000N.safetensors`` files and
``model.safetensors.index.json`` (``{"metadata": {"total_size": ...}, "weight_map":
{name: file}}``), as ``transformers`` writes them: canonical names, canonical layout, each
storage once. Every process computes the same headers; it writes the header and only the
blocks its devices own (the first replica of each), each at its byte offset, so no
process ever holds a parameter it does not own. Loading reads each block with safetensors
slicing, into a sharded model (``mesh=``, ``layout=``) or an unsharded one, any backend.

    >>> unifparam.save_sharded(net, "ckpt/")             # every rank calls it
    >>> unifparam.load_sharded(fresh, "ckpt/", mesh=mesh, layout=layout)

With several processes, wait for all of them (``torch.distributed.barrier()``) before
reading the directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from . import dtypes as _dtypes
from ._backend import MATERIALIZED
from ._lazy import np
from ._locking import serialized
from .errors import CheckpointMismatchError, CheckpointNotFoundError, InputShapeError

INDEX = "model.safetensors.index.json"
_DTYPES = _dtypes.CODES
_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
             "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _groups(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str],
            max_bytes: int) -> list[list[str]]:
    """Storages in model order, cut into files of at most ``max_bytes`` (one tensor at least)."""
    files: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[_DTYPES[dtypes[name]]]
        if files[-1] and size + nbytes > max_bytes:
            files.append([])
            size = 0
        files[-1].append(name)
        size += nbytes
    return files


def _header(names: list[str], shapes: Mapping[str, tuple[int, ...]],
            dtypes: Mapping[str, str]) -> tuple[bytes, dict[str, int]]:
    """The safetensors header bytes (8-byte length, JSON padded to 8) and data offsets."""
    doc: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offsets, at = {}, 0
    for name in names:
        code = _DTYPES[dtypes[name]]
        nbytes = int(np.prod(shapes[name], dtype=np.int64)) * _ITEMSIZE[code]
        doc[name] = {"dtype": code, "shape": list(shapes[name]), "data_offsets": [at, at + nbytes]}
        offsets[name] = at
        at += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    head = len(raw).to_bytes(8, "little") + raw
    return head, {n: start + o for n, o in offsets.items()} | {"": start + at}


@serialized
def save_sharded(model: Any, directory: str | os.PathLike[str], *,
                 max_shard_bytes: int = 5 << 30) -> None:
    """Write ``model``'s storages to ``directory`` in Hugging Face's sharded layout.

    Each process writes only the blocks it owns; a sharded or unsharded model, any backend.
    """
    from .init import _runs, block_slices
    st = model._st
    if not st.all_in(MATERIALIZED):
        raise InputShapeError("save_sharded needs a materialized model: call "
                              "unifparam.materialize(net, X) first.")
    shapes = {r: tuple(int(d) for d in st.status(r)[0]) for r in st.slots}
    dtypes = {r: st.dtype(r) for r in st.slots}
    os.makedirs(directory, exist_ok=True)
    groups = _groups(shapes, dtypes, max_shard_bytes)
    weight_map = {}
    for i, names in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        head, offsets = _header(names, shapes, dtypes)
        fd = os.open(os.path.join(directory, fname), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, offsets[""])  # every process: the same size, holes filled below
            os.pwrite(fd, head, 0)
            for name in names:
                weight_map[name] = fname
                item = _ITEMSIZE[_DTYPES[dtypes[name]]]
                for index, block in st.backend.owned_blocks(st.native, st.slots[name].ref):
                    slices = block_slices(shapes[name], index)
                    data = np.ascontiguousarray(block, dtype=_dtypes.numpy_dtype(
                        dtypes[name])).reshape(-1)
                    at = 0
                    for start, length in _runs(shapes[name], slices):
                        os.pwrite(fd, data[at:at + length].tobytes(),
                                  offsets[name] + start * item)
                        at += length
        finally:
            os.close(fd)
    total = sum(int(np.prod(s, dtype=np.int64)) * _ITEMSIZE[_DTYPES[dtypes[n]]]
                for n, s in shapes.items())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    tmp = os.path.join(directory, f".{INDEX}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, INDEX))


@serialized
def load_sharded(model: Any, directory: str | os.PathLike[str], *, mesh: Any = None,
                 layout: Any = None) -> Any:
    """Load a sharded-layout directory into ``model``, reading only the blocks it needs.

    Storages not materialized yet are planned from the files' shapes (sharded with
    ``mesh``/``layout``); materialized ones are overwritten whole. Names must match.
    """
    from safetensors import safe_open

    from ._plan import apply, for_shapes
    st = model._st
    path = os.path.join(directory, INDEX)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"No {INDEX} in {os.fspath(directory)!r}: is it a "
                                      f"directory written by save_sharded or transformers?")
    with open(path) as f:
        weight_map = json.load(f)["weight_map"]
    missing = sorted(set(st.slots) - set(weight_map))
    unexpected = sorted(set(weight_map) - set(st.slots) - set(st.aliases))
    if missing or unexpected:
        raise CheckpointMismatchError(f"{directory}: the model's parameters and the "
                                      f"checkpoint's differ: missing {missing[:4]}, "
                                      f"unexpected {unexpected[:4]}.")
    handles: dict[str, Any] = {}

    def tensor(name: str) -> Any:
        fname = weight_map[name]
        if fname not in handles:
            handles[fname] = safe_open(os.path.join(directory, fname), framework="numpy")
        return handles[fname].get_slice(name)

    shapes = {r: tuple(tensor(r).get_shape()) for r in st.slots}
    for root, shape in shapes.items():
        known = st.status(root)[0]
        if known is not None and any(k is not None and k != d for k, d in zip(known, shape)):
            raise CheckpointMismatchError(f"{directory}: parameter {root!r} has shape "
                                          f"{tuple(known)} in the model, {shape} in the file.")

    def reader(name: str) -> Any:
        def read(index: Any = None) -> Any:
            sl = tensor(name)
            return sl[:] if index is None else sl[tuple(index)]
        return read

    todo = [r for r in st.slots if st.state_of(r) != MATERIALIZED]
    if todo:
        plan, values = for_shapes(st, todo, shapes, {}, False,
                                  values={r: reader(r) for r in todo}, mesh=mesh, layout=layout)
        apply(st, plan, values)
    for root in st.slots:
        if root not in todo:
            st.call("write", st.slots[root].ref, np.ascontiguousarray(reader(root)()))
        st.slots[root].initialized = True
    return model
