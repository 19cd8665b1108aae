"""Checkpoint directories in Hugging Face's layout: ``model.safetensors``, or shards plus
``model.safetensors.index.json``, read and written through the one file reader and writer.

Each shard is a checkpoint file with every guarantee of :mod:`unifparam._ckptfile` (bounded
header, regular file only, digests, atomic byte-reproducible write). The index is hostile
input: bounded, strict JSON; every shard name a plain file name in the directory (no
absolute path, no ``..``, no separator, no symbolic link leaving it, except the blob links
of a Hugging Face cache snapshot); every tensor stored exactly once, in the shard the index
names. unifparam's model-level metadata (ties, trainability, spec) is in the index's
``metadata`` beside ``total_size``.

A sharded save is atomic as a whole: shards are written under new names that hash their
header (``model-00001-of-00002-<hash>.safetensors``, so a reader holding the old index
never finds a new shard under an old name), then the index is replaced atomically, then
shards no index names any more are removed. Concurrent saves to one directory take turns
(a lock on the directory). A reader sees the old checkpoint or the new one, never a mix.

    >>> ck = open_checkpoint("gpt2/")          # a directory, or a file
    >>> sorted(ck.tensors)[:2], ck.writer
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _ckptfile
from ._ckptfile import Checkpoint, Value
from ._lazy import np
from .errors import CheckpointError, CheckpointFormatError, CheckpointNotFoundError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
MAX_INDEX_BYTES = 64 * 2**20
MAX_SHARDS = 10_000
#: Shard files a save replaces: Hugging Face's names, with or without unifparam's hash.
SHARD = re.compile(r"model-\d{5}-of-\d{5}(-[0-9a-f]{16})?\.safetensors")


@dataclass(eq=False)
class CheckpointSet(Checkpoint):
    """A sharded checkpoint: the tensors of its ``parts`` (one Checkpoint per shard)."""

    parts: list[Checkpoint] = field(default_factory=list)

    def arrays(self, *, verify: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        owner = self.__dict__.setdefault("_owner", {})
        if self.verify if verify is None else verify:
            self.check_digests()  # every shard at once, then each part's arrays() skips it
        for part in self.parts:
            got = part.arrays(verify=verify)
            owner.update({id(a): part for a in got.values()})
            out.update(got)
        return out

    def release(self, array: Any) -> None:
        part = self.__dict__.get("_owner", {}).get(id(array))
        for p in [part] if part is not None else self.parts:
            p.release(array)  # each unmaps only what lies in its own mapping

    def check_digests(self) -> None:
        """Every shard's digests, several shards at a time (hashlib releases the GIL)."""
        todo = [p for p in self.parts if not p._verified]
        workers = min(len(todo), os.cpu_count() or 1, 8)
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda p: p.check_digests(), todo))
        else:
            for part in todo:
                part.check_digests()
        self._verified = True


def _bad(path: str, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path} is not a valid checkpoint index: {why}. Save the "
                                 f"directory again, or check that it was copied completely.")


# ---- read -------------------------------------------------------------------------------
def open_checkpoint(path: str | os.PathLike[str], *, verify: bool = True) -> Checkpoint:
    """The checkpoint at ``path``: a file, or a directory holding ``model.safetensors``
    (preferred, as ``from_pretrained`` does) or ``model.safetensors.index.json`` and shards."""
    path = _ckptfile._fspath(path, "read")
    if not os.path.isdir(path):
        return _ckptfile.read(path, verify=verify)
    single = os.path.join(path, SINGLE)
    if os.path.lexists(single):
        return _ckptfile.read(_confined(path, SINGLE, single), verify=verify)
    index = os.path.join(path, INDEX)
    if not os.path.lexists(index):
        raise CheckpointNotFoundError(
            f"{path} is a directory without {SINGLE} or {INDEX}. Give the directory "
            f"save_pretrained or unifparam.save_sharded wrote, or a .safetensors file.")
    for attempt in range(3):  # the index was replaced by a save while its shards were read
        raw = _read_index_bytes(index)
        try:
            return _open_sharded(path, index, raw, verify)
        except CheckpointNotFoundError:
            if attempt == 2 or _read_index_bytes(index) == raw:
                raise
    raise AssertionError("unreachable")


def _read_index_bytes(index: str) -> bytes:
    try:
        fd = os.open(index, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _ckptfile._os_error(index, e, "read") from None
    try:
        st = os.fstat(fd)
        _ckptfile._require_regular(index, st.st_mode)
        if st.st_size > MAX_INDEX_BYTES:
            raise _bad(index, f"it has {st.st_size:,} bytes, over the limit of "
                              f"{MAX_INDEX_BYTES:,}")
        chunks, left = [], MAX_INDEX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:
        raise _ckptfile._os_error(index, e, "read") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_INDEX_BYTES:
        raise _bad(index, f"it grew over the limit of {MAX_INDEX_BYTES:,} bytes while read")
    return raw


def _parse_index(index: str, raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    if raw.count(b",") > 4 * _ckptfile.MAX_TENSORS:
        raise _bad(index, f"it names more than {_ckptfile.MAX_TENSORS:,} tensors")
    doc = _ckptfile._json(index, raw, "index")
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise _bad(index, "it is not a JSON object with a 'weight_map' object")
    meta = doc.get("metadata", {})
    if not isinstance(meta, dict):
        raise _bad(index, "its 'metadata' is not an object")
    weight_map = doc["weight_map"]
    for name, shard in weight_map.items():
        try:
            _ckptfile._check_name(index, name)
        except CheckpointFormatError:
            raise _bad(index, f"{name[:80]!r} is not a parameter name") from None
        if not isinstance(shard, str):
            raise _bad(index, f"tensor {name!r} maps to {str(shard)[:80]!r}, not a file name")
    if len(set(weight_map.values())) > MAX_SHARDS:
        raise _bad(index, f"it names more than {MAX_SHARDS:,} shard files")
    return weight_map, meta


def _open_sharded(directory: str, index: str, raw: bytes, verify: bool) -> CheckpointSet:
    weight_map, meta = _parse_index(index, raw)
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    parts = []
    for shard, names in shards.items():
        part = _ckptfile.read(_confined(index, shard, os.path.join(directory, shard)),
                              verify=verify)
        if set(part.tensors) != set(names):
            extra = sorted(set(part.tensors) - set(names))
            lost = sorted(set(names) - set(part.tensors))
            raise _bad(index, f"shard {shard!r} " + (
                f"stores {extra[0]!r}, which the index maps elsewhere or not at all" if extra
                else f"lacks {lost[0]!r}, which the index says it stores"))
        parts.append(part)
    tensors = {n: t for part in parts for n, t in part.tensors.items()}
    own = meta.get("format") == _ckptfile.FORMAT
    writer = "unifparam" if own else next(
        (p.writer for p in parts if p.foreign), _ckptfile.foreign_writer(meta))
    ck = CheckpointSet(directory, sum(p.size for p in parts), 0, tensors,
                       {k: v for k, v in meta.items() if k != "total_size"}, verify=verify,
                       writer=writer, parts=parts)
    if own:
        total = meta.get("total_size")
        if total != sum(t.end - t.begin for t in tensors.values()):
            raise _bad(index, f"its total_size {str(total)[:20]} is not the shards' data size")
        if not all(isinstance(v, str) for v in ck.metadata.values()):
            raise _bad(index, "its unifparam metadata does not map strings to strings")
        foreign = next((p.path for p in parts if p.foreign), None)
        if foreign is not None:
            raise _bad(index, f"it claims the {_ckptfile.FORMAT} format but shard {foreign} "
                              f"does not (no digests to check its values)")
        _ckptfile._read_metadata(ck, need_digests=False)
        ck.digests = {n: d for p in parts for n, d in p.digests.items()}
    return ck


def _confined(index: str, shard: str, path: str) -> str:
    """``path`` (``shard`` in the directory) if it names a file in the directory itself."""
    directory = os.path.dirname(path)
    if (not shard or shard in (".", "..") or "/" in shard or "\\" in shard or "\0" in shard
            or os.sep in shard or (os.altsep and os.altsep in shard) or os.path.isabs(shard)
            or _ckptfile.is_temp_name(shard)):
        raise _bad(index, f"the shard name {shard[:80]!r} is not a file name in the directory "
                          f"(no absolute paths, separators or '..')")
    real = os.path.realpath(path)
    home = os.path.realpath(directory)
    if os.path.dirname(real) != home and not _cache_blob(home, real):
        raise _bad(index, f"the shard {shard!r} is a symbolic link leaving the directory "
                          f"(to {real[:120]!r})")
    return path


def _cache_blob(home: str, real: str) -> bool:
    """A Hugging Face cache snapshot links its files to ``<repo>/blobs/<hash>``."""
    snapshots = os.path.dirname(home)
    return (os.path.basename(snapshots) == "snapshots"
            and os.path.dirname(real) == os.path.join(os.path.dirname(snapshots), "blobs"))


# ---- write ------------------------------------------------------------------------------
def write_sharded(directory: str | os.PathLike[str], arrays: Mapping[str, Value],
                  metadata: Mapping[str, str], max_shard_bytes: int) -> dict[str, str]:
    """Write ``arrays`` as shards of at most ``max_shard_bytes`` (one tensor at least) plus
    the index, atomically as a whole (see the module docstring); the weight map written."""
    directory = _ckptfile._fspath(directory, "save")
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(f"Cannot save to {directory}: it is not a directory. "
                                      f"Create it first (os.makedirs) or choose another path.")
    shard_meta = {k: metadata[k] for k in ("format", "format_version", "unifparam_version",
                                           "backend") if k in metadata}
    plan = _ckptfile._plan(directory, arrays)
    groups = _groups(plan, max_shard_bytes)
    with _locked(directory):
        weight_map: dict[str, str] = {}
        for i, names in enumerate(groups):
            stem = f"model-{i + 1:05d}-of-{len(groups):05d}"
            written = _ckptfile.write(
                os.path.join(directory, stem + ".safetensors"),
                {n: arrays[n] for n in names}, shard_meta,
                name=lambda header, stem=stem:  # type: ignore[misc]
                f"{stem}-{hashlib.sha256(header).hexdigest()[:16]}.safetensors")
            weight_map.update({n: os.path.basename(written) for n in names})
        total = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
                    for d, s, _ in plan.values())
        doc = {"metadata": {"total_size": total, **metadata},
               "weight_map": dict(sorted(weight_map.items()))}
        text = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        _ckptfile.publish(os.path.join(directory, INDEX),
                          lambda fd: _ckptfile._write_all(fd, text) or text)
        _remove_replaced(directory, set(weight_map.values()))
    return weight_map


def _groups(plan: Mapping[str, tuple[str, tuple[int, ...], Any]], max_bytes: int
            ) -> list[list[str]]:
    """Names in order, cut into shards of at most ``max_bytes`` (one tensor at least)."""
    files: list[list[str]] = [[]]
    size = 0
    for name, (dtype, shape, _) in plan.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if files[-1] and size + nbytes > max_bytes:
            files.append([])
            size = 0
        files[-1].append(name)
        size += nbytes
    return files


def _remove_replaced(directory: str, keep: set[str]) -> None:
    """Remove the single file and shards the new index does not name (as save_pretrained
    does), so that ``from_pretrained``, which prefers ``model.safetensors``, reads the new."""
    for entry in os.scandir(directory):
        if entry.name in keep or not (entry.name == SINGLE or SHARD.fullmatch(entry.name)):
            continue
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                os.unlink(entry.path)


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Saves to one directory take turns (flock on the directory; not on Windows)."""
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise CheckpointError(f"Cannot lock {directory} for saving: {e}.") from None
        yield
    finally:
        os.close(fd)
