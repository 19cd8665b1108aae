"""The checkpoint file: a plain safetensors file, checked strictly, written atomically.

Reading never runs code from the file: only a regular file is opened (a FIFO, device or
directory is refused before any read), once, and mapped once; the header is bounded JSON
(size, JSON values and tensor count are capped before and while parsing); every name, dtype,
shape and offset is checked before any tensor is touched; tensors are views of that one
mapping, so what is returned is what was validated even if the path is replaced meanwhile;
each tensor's bytes are checked against the SHA-256 digest recorded at save.

Writing streams one tensor at a time into a temporary file named
``.<name>.unifparam-tmp-<random>`` next to the target (fsync, then an atomic rename), so a
crash leaves either the old file or none, and the header and bytes are deterministic. Each
tensor goes out in pieces written straight from its buffer while the next piece is made
(a transposed kernel is copied in cache-sized tiles) and hashed on a second thread.

    >>> ck = read("model.safetensors")          # raises CheckpointFormatError if malformed
    >>> ck.tensors["0.weight"].shape, ck.ties
    ((8, 4), [])
    >>> ck.arrays()["0.weight"].sum()           # digests are verified on first arrays()
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import mmap
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from . import dtypes as _dtypes
from ._lazy import np
from .errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointIOError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointPathError,
    CheckpointPermissionError,
    UnifparamError,
    UnsupportedError,
)

FORMAT = "unifparam.checkpoint"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
#: At most this many tensors in one file. The largest single-file checkpoints hold tens of
#: thousands; a header of 10**6 entries took 15 s and 1 GB just to parse before this cap.
MAX_TENSORS = 100_000
#: Upper bound on JSON values in a header (and its metadata strings), counted on the raw
#: bytes before parsing so that parsing stays within a few hundred MB at worst.
MAX_JSON_VALUES = 40 * MAX_TENSORS
MAX_NAME = 512
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*")
#: Every metadata key a unifparam-format file may hold; "digests" is required (when the
#: file has tensors) and any other key is refused: a renamed or dropped digest is not a
#: foreign file. ("arrays": what save_arrays saved, an array, a list or a dict.)
KNOWN_KEYS = frozenset({"format", "format_version", "unifparam_version", "backend", "ties",
                        "trainable", "spec", "digests", "arrays"})
#: What a foreign file's ``format`` metadata says about the tool that wrote it.
WRITERS = {"pt": "PyTorch (transformers save_pretrained, or safetensors.torch with "
                 "metadata)", "tf": "TensorFlow (transformers)", "flax": "Flax (transformers)",
           "np": "numpy (safetensors.numpy)", "mlx": "MLX (mx.save_safetensors)"}
#: safetensors dtype code <-> canonical dtype name (bf16 and fp8: ml_dtypes' numpy types).
DTYPES = dict(_dtypes.FROM_CODE)
CODES = dict(_dtypes.CODES)
#: Digest written at save: SHA-256 (hashlib; SHA-NI makes it 1.4 GiB/s per core here,
#: blake2b 0.7) of the tensor's dtype and shape, then its bytes, so that an edit of the
#: header's dtype or shape no longer verifies (load casts between dtypes).
DIGEST = "sha256t"
#: Digests a reader accepts: name -> (hashlib algorithm, hex length, whether the dtype and
#: shape are hashed before the bytes). "sha256" is what files before "sha256t" carry.
DIGESTS = {"sha256t": ("sha256", 64, True), "sha256": ("sha256", 64, False),
           "blake2b": ("blake2b", 128, False)}
DIGEST_HEX = {name: size for name, (_, size, _) in DIGESTS.items()}


def typed_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    """What a typed digest hashes before a tensor's bytes: its canonical dtype and shape.

    >>> typed_prefix("float32", (3, 4))
    b'float32[3, 4]'
    """
    return f"{dtype}{list(shape)}".encode()


def digest_of(alg: str, dtype: str, shape: tuple[int, ...], data: Any) -> str:
    """The hex digest ``alg`` gives one tensor (its dtype and shape first, if typed)."""
    name, _, typed = DIGESTS[alg]
    h = hashlib.new(name)
    if typed:
        h.update(typed_prefix(dtype, shape))
    h.update(data)
    return h.hexdigest()
#: Marks a temporary file of a save in progress (or killed): ``.<name>.unifparam-tmp-<hex>``.
TEMP_MARK = ".unifparam-tmp-"
#: A temporary file untouched this long and not locked by a live saver is removed by a save.
STALE_SECONDS = 60.0
CHUNK = 16 * 2**20  # bytes written (and hashed) at a time
#: Write into an unnamed temporary file (Linux ``O_TMPFILE``), named only when complete.
UNNAMED_TEMP = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: numpy dtype name, shape, byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Tie:
    """``name`` is stored as ``root`` (transposed if asked). ``explicit``: made by tie()."""

    name: str
    root: str
    transpose: bool
    explicit: bool


@dataclass(eq=False)
class Checkpoint:
    """A validated checkpoint: header facts plus the one copy-on-write mapping of the file.

    ``digests`` maps stored names to ``(algorithm, hex)`` (empty for files without them);
    ``verify`` says whether :meth:`arrays` checks them (once) before returning.
    ``writer`` says who wrote the file: ``"unifparam"``, or for a foreign file (one that
    does not claim the unifparam format: read as plain tensors, no ties, no digests) what
    its metadata tells.
    """

    path: str
    size: int
    data_start: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    ties: list[Tie] = field(default_factory=list)
    trainable: dict[str, bool] = field(default_factory=dict)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)
    verify: bool = True
    writer: str = "unifparam"
    _map: Any = field(default=None, repr=False)
    _verified: bool = field(default=False, repr=False)

    @property
    def foreign(self) -> bool:
        """Written by another tool: plain tensors, nothing recorded to check them against."""
        return self.writer != "unifparam"

    @property
    def verified(self) -> bool:
        """Whether the values are checked against digests recorded at save."""
        return not self.foreign and self.verify

    @property
    def spec_json(self) -> str | None:
        return None if self.foreign else self.metadata.get("spec")

    def _tie(self, name: str) -> Tie | None:
        index = self.__dict__.get("_ties_by_name")
        if index is None or len(index) != len(self.ties):
            index = self.__dict__["_ties_by_name"] = {t.name: t for t in self.ties}
        return index.get(name)

    def tied_root(self, name: str) -> str:
        """The stored name that holds ``name``'s values."""
        tie = self._tie(name)
        return name if tie is None else tie.root

    def order(self) -> list[str]:
        """Stored names in the saved model's order (the header's own order is by dtype)."""
        return [*(n for n in self.trainable if n in self.tensors),
                *(n for n in self.tensors if n not in self.trainable)]

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        """Shape of a stored name or of a tied name (from its root)."""
        if name in self.tensors:
            return self.tensors[name].shape
        tie = self._tie(name)
        if tie is None:
            return None
        shape = self.tensors[tie.root].shape
        return tuple(reversed(shape)) if tie.transpose else shape

    def arrays(self, *, verify: bool | None = None) -> dict[str, np.ndarray]:
        """Every tensor as a copy-on-write view of the file's one mapping (zero-copy).

        The recorded digests are checked first unless ``verify`` (default: the ``verify``
        given to :func:`read`) is false: a corrupted tensor is a CheckpointFormatError.
        """
        if not self.tensors:
            return {}
        if self._map is None:
            self._map = _map_file(self.path)[0]
        self._check_size()
        if (self.verify if verify is None else verify) and not self._verified:
            self.check_digests()
        base = np.ndarray.__new__(np.memmap, (len(self._map),), np.uint8, buffer=self._map)
        self.__dict__["_address"] = base.ctypes.data
        base._mmap, base.filename, base.offset, base.mode = self._map, self.path, 0, "c"
        out = {}
        for name, t in self.tensors.items():
            start = self.data_start + t.begin
            arr = base[start:self.data_start + t.end].view(
                _dtypes.numpy_dtype(t.dtype).newbyteorder("<"))
            arr = arr.reshape(t.shape)
            out[name] = arr if arr.flags.aligned and arr.dtype.isnative else arr.astype(t.dtype)
        return out

    def release(self, array: np.ndarray) -> None:
        """Unmap the file pages under ``array`` (a view from :meth:`arrays`) from this
        process once its values were copied elsewhere. They stay in the page cache and fault
        back in, from the file, if the view is read again; mapped pages count in RSS."""
        address = self.__dict__.get("_address")
        if address is None or not hasattr(mmap, "MADV_DONTNEED") or array.size == 0:
            return
        start = array.ctypes.data - address
        if not 0 <= start <= len(self._map) - array.nbytes:
            return  # a copy made by arrays() (unaligned or big-endian), not a view
        page = mmap.PAGESIZE
        lo, hi = -(-start // page) * page, (start + array.nbytes) // page * page
        if hi > lo:  # whole pages only: a page shared with a neighbour stays
            try:
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass

    def check_digests(self) -> None:
        """Check every tensor's bytes against its recorded digest (no-op without digests)."""
        if not self.digests:
            self._verified = True
            return
        if self._map is None:
            self._map = _map_file(self.path)[0]
        self._check_size()
        view = memoryview(self._map)
        jobs = [(name, *self.digests[name], t, view[self.data_start + t.begin:
                                                    self.data_start + t.end])
                for name, t in self.tensors.items()]
        total = sum(len(j[4]) for j in jobs)
        workers = min(len(jobs), os.cpu_count() or 1, 8) if total >= 64 * 2**20 else 1

        def digest(job: tuple[str, str, str, TensorInfo, memoryview]) -> str:
            _, alg, _, t, data = job
            return digest_of(alg, t.dtype, t.shape, data)
        if workers > 1:  # hashlib releases the GIL on large buffers
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(workers) as pool:
                got = list(pool.map(digest, jobs))
        else:
            got = [digest(j) for j in jobs]
        for (name, alg, want, _, _), have in zip(jobs, got):
            if have != want:
                raise CheckpointFormatError(
                    f"{self.path}: tensor {name!r} does not match its recorded {alg} digest: "
                    f"the file is corrupted, torn, or was changed after it was saved. Copy or "
                    f"save it again (read(path, verify=False) skips this check).")
        self._verified = True

    def _check_size(self) -> None:
        try:
            now = self._map.size()  # fstat of the mapped file itself, not of the path
        except OSError:
            return
        if now != self.size:
            raise CheckpointFormatError(f"{self.path} changed size from {self.size:,} to "
                                        f"{now:,} bytes while being loaded. Load it again once "
                                        f"nothing is writing it.")


def _bad(path: str, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path} is not a valid unifparam checkpoint: {why}. Re-save it "
                                 f"with unifparam.save, or check that it was copied completely.")


# ---- read -------------------------------------------------------------------------------
def read(path: str | os.PathLike[str], *, verify: bool = True) -> Checkpoint:
    """Open, map and validate the checkpoint at ``path`` (tensor bytes are not read yet).

    ``verify=False`` skips the digest check that :meth:`Checkpoint.arrays` does by default.
    """
    path = _fspath(path, "read")
    if is_temp_name(path):
        raise CheckpointFormatError(
            f"{path} is the temporary file of a save that did not finish (killed or failed); "
            f"it may be incomplete. Delete it and load the checkpoint it was meant to replace.")
    mm, size = _map_file(path)
    n = int.from_bytes(mm[:8], "little")
    if mm[8:9] != b"{":  # the format: 8 bytes of header length, then a JSON object
        raise _bad(path, "it is not a safetensors file (no JSON header after its first 8 "
                         "bytes)")
    if n > MAX_HEADER_BYTES:
        raise _bad(path, f"its header claims {n:,} bytes, over the limit of "
                         f"{MAX_HEADER_BYTES:,}")
    if n > size - 8:
        raise _bad(path, f"its header claims {n:,} bytes but the file has {size:,} "
                         f"(truncated?)")
    header = _parse_header(path, mm[8:8 + n])
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise _bad(path, "its __metadata__ is not a mapping of strings to strings")
    if len(header) > MAX_TENSORS:
        raise _bad(path, f"its header has more than {MAX_TENSORS:,} tensors, the limit")
    if meta.get("format") != FORMAT and _claims_format(meta):
        raise _bad(path, f"its metadata has unifparam's entries but its format is "
                         f"{str(meta.get('format'))[:40]!r}, not {FORMAT!r}")
    writer = "unifparam" if meta.get("format") == FORMAT else foreign_writer(meta)
    tensors = {name: _tensor(path, name, entry) for name, entry in header.items()}
    _check_offsets(path, tensors, size - 8 - n)
    ck = Checkpoint(path, size, 8 + n, tensors, meta, verify=verify, writer=writer, _map=mm)
    if writer == "unifparam":
        _read_metadata(ck)
    return ck


def _claims_format(meta: Mapping[str, Any]) -> bool:
    """Whether metadata looks like unifparam's (so it must say the format exactly): an
    edited format tag does not turn a unifparam file into an unchecked foreign one."""
    fmt = meta.get("format")
    return ("unifparam_version" in meta or "digests" in meta
            or (isinstance(fmt, str) and fmt.lower().startswith("unifparam")))


def foreign_writer(meta: Mapping[str, Any]) -> str:
    """Who wrote a file without unifparam's format, as far as its metadata tells."""
    fmt = meta.get("format")
    if not isinstance(fmt, str):
        return "another tool: a plain safetensors file (no format recorded: save_file, keras_hub)"
    return WRITERS.get(fmt, f"another tool (format {fmt[:40]!r})")


def _fspath(path: Any, verb: str) -> str:
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise CheckpointPathError(f"unifparam needs a file path to {verb} a checkpoint, got "
                                  f"{path!r}. Pass a path such as 'model.safetensors'.")
    text = os.fsdecode(os.fspath(path))
    if not text:
        raise CheckpointNotFoundError("The checkpoint path is empty. Pass a path such as "
                                      "'model.safetensors'.")
    return text


def _map_file(path: str) -> tuple[mmap.mmap, int]:
    """One descriptor, opened only on a regular file, and one copy-on-write map of it."""
    try:
        _require_regular(path, os.stat(path).st_mode)  # no open() of a FIFO or a device
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except CheckpointError:
        raise
    except OSError as e:
        raise _os_error(path, e, "read") from None
    try:
        st = os.fstat(fd)
        _require_regular(path, st.st_mode)  # the path may have changed since stat()
        if st.st_size < 8:
            raise _bad(path, f"it has {st.st_size} bytes, fewer than the 8-byte header length")
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as e:
            raise CheckpointIOError(f"Cannot memory-map {path} ({e}); checkpoints are read "
                                    f"from regular files on a local or network file system.",
                                    errno=getattr(e, "errno", None), filename=path) from None
    finally:
        os.close(fd)  # the map keeps its own reference to the file
    if len(mm) < 8:
        raise _bad(path, f"it has {len(mm)} bytes, fewer than the 8-byte header length")
    return mm, len(mm)


def _require_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise CheckpointNotFoundError(f"{path} is a directory, not a checkpoint file. Give the "
                                      f"path of a .safetensors file.")
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise CheckpointFormatError(f"{path} is {kind}, not a regular file; checkpoints are read "
                                f"only from regular files. Copy it to a file first.")


def _os_error(path: str, e: OSError, verb: str) -> CheckpointError:
    if isinstance(e, (FileNotFoundError, NotADirectoryError)):
        if verb == "read":
            return CheckpointNotFoundError(f"No checkpoint at {path}. Check the path, or save "
                                           f"one with unifparam.save(net, path).")
        return CheckpointNotFoundError(f"Cannot save to {path}: its directory does not exist. "
                                       f"Create it first (os.makedirs) or choose another path.")
    if e.errno == errno.ELOOP:
        return CheckpointNotFoundError(f"{path} is a loop of symbolic links, not a checkpoint "
                                       f"file. Fix the link to point at a .safetensors file.")
    if isinstance(e, PermissionError):
        fix = ("make it readable (chmod) or copy it somewhere readable" if verb == "read" else
               "save into a directory you can write, or fix its permissions")
        return CheckpointPermissionError(f"Cannot {verb} {path}: permission denied; {fix}.",
                                         errno=e.errno, filename=path)
    fix = {errno.EROFS: "the file system is read-only; save somewhere writable",
           errno.ENOSPC: "the disk is full; free space or save elsewhere",
           errno.EDQUOT: "the disk quota is exceeded; free space or save elsewhere"}.get(
        e.errno or 0, "check the disk and the path")
    return CheckpointIOError(f"Cannot {verb} {path}: {e.strerror or e}; {fix}.",
                             errno=e.errno, filename=path)


def _parse_header(path: str, raw: bytes) -> Any:
    # Every JSON value but the first follows a ',' or opens with '[' or '{' (strings count
    # too: an upper bound). Counting is C-speed and bounds what json.loads may allocate.
    values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > MAX_JSON_VALUES:
        raise _bad(path, f"its header holds about {values:,} JSON values, over the limit of "
                         f"{MAX_JSON_VALUES:,} (at most {MAX_TENSORS:,} tensors are supported)")
    objects = 0

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal objects
        objects += 1
        if objects > MAX_TENSORS + 2:  # one per tensor, the header and its __metadata__
            raise _bad(path, f"its header has more than {MAX_TENSORS:,} tensors, the limit")
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise _bad(path, f"its header has the key {key[:80]!r} twice")
                seen.add(key)
        return out

    return _json(path, raw, "header", unique)


def _json(path: str, raw: bytes | str, what: str,
          hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=hook or _unique_keys(path, what))
    except CheckpointFormatError:
        raise
    except (ValueError, RecursionError) as e:  # also UnicodeDecodeError, int digit limits
        raise _bad(path, f"its {what} is not valid JSON ({type(e).__name__})") from None


def _unique_keys(path: str, what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise _bad(path, f"its {what} repeats a key")
        return out
    return hook


def _check_name(path: str, name: Any) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise _bad(path, f"{str(name)[:80]!r} is not a parameter name (dot-separated words of "
                         f"letters, digits, _ and -)")
    return name


def _tensor(path: str, name: str, entry: Any) -> TensorInfo:
    _check_name(path, name)
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _bad(path, f"tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _bad(path, f"tensor {name!r} has dtype {str(dtype)[:20]!r}; supported: "
                         f"{', '.join(DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= 16 and all(_uint(d) for d in shape)):
        raise _bad(path, f"tensor {name!r} has a bad shape {str(shape)[:80]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_uint(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise _bad(path, f"tensor {name!r} has bad data_offsets {str(offsets)[:80]}")
    np_dtype = DTYPES[dtype]
    nbytes = math.prod(shape) * _dtypes.numpy_dtype(np_dtype).itemsize
    if nbytes != offsets[1] - offsets[0]:
        raise _bad(path, f"tensor {name!r} of shape {tuple(shape)} and dtype {np_dtype} needs "
                         f"{nbytes:,} bytes but its offsets span {offsets[1] - offsets[0]:,}")
    return TensorInfo(np_dtype, tuple(shape), offsets[0], offsets[1])


def _uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**53


def _check_offsets(path: str, tensors: dict[str, TensorInfo], data_size: int) -> None:
    end = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != end:
            raise _bad(path, "its tensors overlap or leave gaps in the data section")
        end = t.end
    if end != data_size:
        raise _bad(path, f"its tensors need {end:,} data bytes but the file holds {data_size:,} "
                         f"(truncated or padded)")


def _read_metadata(ck: Checkpoint, need_digests: bool = True) -> None:
    """Parse and check unifparam's own metadata entries (a file claiming the format).
    ``need_digests=False``: a directory's index, whose shards carry the digests."""
    meta, path = ck.metadata, ck.path
    unknown = sorted(set(meta) - KNOWN_KEYS)
    if unknown:
        raise _bad(path, f"it claims the {FORMAT} format but its metadata has unknown keys "
                         f"{', '.join(repr(k[:40]) for k in unknown[:4])}")
    if "digests" not in meta and ck.tensors and need_digests:
        raise _bad(path, f"it claims the {FORMAT} format but records no digests, so its "
                         f"values cannot be checked")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _bad(path, f"it has format version {meta.get('format_version', '')[:20]!r}; this "
                         f"unifparam reads version {FORMAT_VERSION}. Upgrade unifparam")
    ties = _json(path, meta.get("ties", "[]"), "ties metadata")
    if not isinstance(ties, list):
        raise _bad(path, "its ties metadata is not a list")
    seen: set[str] = set()
    for entry in ties:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[2], bool)
                and isinstance(entry[3], bool)):
            raise _bad(path, "a ties entry is not [name, root, transpose, explicit]")
        name, root = _check_name(path, entry[0]), _check_name(path, entry[1])
        if name in ck.tensors or name in seen or root not in ck.tensors:
            raise _bad(path, f"the tie {name!r} -> {root!r} does not name a stored tensor once")
        if entry[2] and len(ck.tensors[root].shape) != 2:
            raise _bad(path, f"the transposed tie {name!r} -> {root!r} is not 2-D")
        seen.add(name)
        ck.ties.append(Tie(name, root, entry[2], entry[3]))
    trainable = _json(path, meta.get("trainable", "{}"), "trainable metadata")
    if not isinstance(trainable, dict) or not all(k in ck.tensors and isinstance(v, bool)
                                                  for k, v in trainable.items()):
        raise _bad(path, "its trainable metadata does not map stored names to booleans")
    ck.trainable = trainable
    if "digests" in meta:
        ck.digests = _digests(path, _json(path, meta["digests"], "digests metadata"),
                              ck.tensors)
    if "spec" in meta:
        _json(path, meta["spec"], "recorded spec")  # decoded (and checked) by _specio


def _digests(path: str, doc: Any, tensors: Mapping[str, TensorInfo]
             ) -> dict[str, tuple[str, str]]:
    if not isinstance(doc, dict) or set(doc) != set(tensors):
        raise _bad(path, "its digests metadata does not name each stored tensor once")
    out = {}
    for name, value in doc.items():
        alg, _, hexdigest = value.partition(":") if isinstance(value, str) else ("", "", "")
        if len(hexdigest) != DIGEST_HEX.get(alg) or not re.fullmatch(r"[0-9a-f]+", hexdigest):
            raise _bad(path, f"the digest of tensor {name!r} is not one of "
                             f"{', '.join(f'{a}:<hex>' for a in DIGEST_HEX)}")
        out[name] = (alg, hexdigest)
    return out


def is_temp_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names the temporary file of a unifparam save (finished or not)."""
    base = os.path.basename(os.fsdecode(os.fspath(path)))
    return base.startswith(".") and TEMP_MARK in base


# ---- write ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pending:
    """A tensor to save whose values are fetched only when written: ``fetch() -> array``.

    Its dtype (numpy name) and shape go into the header before any value is fetched, so a
    save holds one tensor at a time beyond the model.

    >>> Pending("float32", (8, 4), lambda: backend.read(native, ref))
    """

    dtype: str
    shape: tuple[int, ...]
    fetch: Callable[[], Any]


#: What :func:`write` takes for each name: an array, a Pending, or a zero-argument callable
#: returning the array (called twice: once for its shape and dtype, once to write it).
Value = Union["np.ndarray", Pending, Callable[[], Any]]


def write(path: str | os.PathLike[str], arrays: Mapping[str, Value],
          metadata: Mapping[str, str], *, name: Callable[[bytes], str] | None = None) -> str:
    """Write atomically, one tensor at a time: a temporary file beside ``path``, fsync, rename.

    A crash or kill at any point leaves the previous file at ``path`` intact (or no file).
    On Linux the temporary file has no name (``O_TMPFILE``) until it is complete, so a
    killed save leaves nothing behind; elsewhere it is ``.<name>.unifparam-tmp-<hex>``,
    removed by a later save once its saver is gone. The file is standard safetensors:
    tensors ordered by dtype size then name, the header JSON with sorted keys, and
    ``metadata`` plus ``digests`` (a SHA-256 of each tensor). Saving the same values twice
    gives the same bytes. ``name(header)``, if given, picks the file name (in ``path``'s
    directory) once the final header is known; the path written is returned.
    """
    path = _fspath(path, "save")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointNotFoundError(f"Cannot save to {path}: it is a directory. Give a file "
                                      f"path such as {os.path.join(path, 'model.safetensors')}.")
    if not os.path.isdir(directory):
        raise CheckpointNotFoundError(f"Cannot save to {path}: the directory {directory} does "
                                      f"not exist. Create it first (os.makedirs) or choose "
                                      f"another path.")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointFormatError(f"Cannot save {path}: safetensors metadata maps strings to "
                                    f"strings; encode other values as JSON text first.")
    plan = _plan(path, arrays)
    order = sorted(plan, key=lambda n: (-_dtypes.numpy_dtype(plan[n][0]).itemsize, n))
    offsets, end = {}, 0
    for key in order:
        dtype, shape, _ = plan[key]
        nbytes = math.prod(shape) * _dtypes.numpy_dtype(dtype).itemsize
        offsets[key], end = (end, end + nbytes), end + nbytes
    digests = {key: DIGEST + ":" + "0" * DIGEST_HEX[DIGEST] for key in plan}
    header = _header(plan, offsets, metadata, digests)

    def body(fd: int) -> bytes:
        _write_all(fd, header)
        with _Pipeline(fd) as pipe:
            for key in order:
                dtype, shape, _ = plan[key]
                digests[key] = pipe.tensor(_chunks(path, key, *plan[key]),
                                           typed_prefix(dtype, shape))
        final = _header(plan, offsets, metadata, digests)
        assert len(final) == len(header)  # fixed-width digests: same layout
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, final)
        return final

    return publish(path, body, name)


def publish(path: str, body: Callable[[int], bytes], name: Callable[[bytes], str] | None = None
            ) -> str:
    """Run ``body(fd)`` on a new temporary file beside ``path``, fsync it, and put it in place
    atomically (at ``path``, or at ``name(body's result)`` in the same directory).

    The temporary file is unnamed on Linux (``O_TMPFILE``; it vanishes if the process dies)
    and linked in only when complete; elsewhere it is a named ``TEMP_MARK`` file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(path, directory)
    target = path
    try:
        try:
            _lock(fd)
            result = body(fd)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _mode(path))
            os.fsync(fd)  # little is left: the pipeline started writeback chunk by chunk
            if name is not None:
                target = os.path.join(directory, name(result))
            if tmp is None:
                tmp = _link_unnamed(fd, target, directory)
        finally:
            os.close(fd)
        if tmp is not None:
            os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError) and not isinstance(e, CheckpointError):
            raise _os_error(target, e, "save") from e
        raise
    _fsync_dir(directory)
    _remove_stale_temps(path, directory)
    return target


def _link_unnamed(fd: int, target: str, directory: str) -> str | None:
    """Give the complete unnamed file ``fd`` its name: ``target`` itself when that is free
    (nothing left to rename), else a temporary name that the caller renames over it."""
    source = f"/proc/self/fd/{fd}"
    dirfd = os.open(directory, os.O_RDONLY)
    try:  # a dir_fd makes os.link call linkat, which AT_SYMLINK_FOLLOW needs here
        try:
            os.link(source, os.path.basename(target), dst_dir_fd=dirfd, follow_symlinks=True)
            return None
        except FileExistsError:
            pass
        stem = os.path.basename(target)[:180]
        for _ in range(100):
            tmp = f".{stem}{TEMP_MARK}{os.urandom(4).hex()}"
            try:
                os.link(source, tmp, dst_dir_fd=dirfd, follow_symlinks=True)
                return os.path.join(directory, tmp)
            except FileExistsError:
                continue
    finally:
        os.close(dirfd)
    raise CheckpointIOError(f"Cannot save to {target}: no free temporary name in {directory}.",
                            errno=errno.EEXIST, filename=target)


def _plan(path: str, arrays: Mapping[str, Value]) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """name -> (numpy dtype name, shape, source), without fetching any Pending."""
    plan = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or len(name) > MAX_NAME or not NAME.fullmatch(name):
            raise CheckpointFormatError(f"Cannot save tensor {str(name)[:80]!r} to {path}: a "
                                        f"name is dot-separated words of letters, digits, _ "
                                        f"and -.")
        if isinstance(value, Pending):
            try:
                dtype = _dtypes.canonical(value.dtype)
            except UnifparamError:
                dtype = str(value.dtype)
            shape = tuple(int(d) for d in value.shape)
        else:
            probe = np.asarray(value() if callable(value) else value)
            dtype, shape = probe.dtype.name, tuple(probe.shape)
            del probe
        if dtype not in CODES:
            raise UnsupportedError(f"Tensor {name!r} has dtype {dtype}, which the checkpoint "
                                   f"format cannot store ({', '.join(CODES)}).")
        plan[name] = (dtype, shape, value)
    return plan


def _header(plan: Mapping[str, tuple[str, tuple[int, ...], Any]],
            offsets: Mapping[str, tuple[int, int]], metadata: Mapping[str, str],
            digests: Mapping[str, str]) -> bytes:
    meta = dict(metadata)
    if plan and digests:
        meta["digests"] = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    doc: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))}
    for name in sorted(plan):
        dtype, shape, _ = plan[name]
        doc[name] = {"dtype": CODES[dtype], "shape": list(shape),
                     "data_offsets": list(offsets[name])}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # as safetensors pads: the data section starts aligned
    return len(raw).to_bytes(8, "little") + raw


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _chunks(path: str, name: str, dtype: str, shape: tuple[int, ...], source: Value
            ) -> Iterator[memoryview]:
    """The tensor's little-endian bytes in pieces of about CHUNK bytes.

    A C-contiguous little-endian value is yielded as views of its own buffer (no copy).
    Any other (a transposed kernel, a strided view, big-endian) is copied a piece at a time
    into two alternating scratch buffers, so a yielded view stays valid until the
    next-but-one piece is asked for (what :class:`_Pipeline` relies on).
    """
    arr = source.fetch() if isinstance(source, Pending) else source() if callable(source) \
        else source
    arr = np.asarray(arr)
    if arr.dtype.name != dtype or tuple(arr.shape) != shape:
        raise CheckpointMismatchError(
            f"Cannot save tensor {name!r} to {path}: declared {dtype} {shape}, but its value "
            f"is {arr.dtype.name} {tuple(arr.shape)}. Nothing was written.")
    if arr.dtype.name in _dtypes.EXTENSIONS:  # bfloat16, float8: their bits, as unsigned ints
        arr = arr.view(np.dtype(f"u{arr.itemsize}"))
    little = arr.dtype.newbyteorder("<")
    if arr.ndim == 0 or arr.size == 0:
        yield memoryview(np.ascontiguousarray(arr, dtype=little).reshape(-1)).cast("B")
        return
    if arr.flags.c_contiguous and arr.dtype == little:
        flat = memoryview(arr.reshape(-1)).cast("B")
        step = max(CHUNK // arr.itemsize, 1) * arr.itemsize
        for i in range(0, len(flat), step):
            yield flat[i:i + step]
        return
    rows = max(1, CHUNK // max(1, arr[0].nbytes))
    scratch = [np.empty(0, little), np.empty(0, little)]
    for k, i in enumerate(range(0, arr.shape[0], rows)):
        src = arr[i:i + rows]
        if scratch[k % 2].size < src.size:
            scratch[k % 2] = np.empty(src.size, little)
        out = scratch[k % 2][:src.size].reshape(src.shape)
        _copy(out, src)
        yield memoryview(out.reshape(-1)).cast("B")


def _copy(out: np.ndarray, src: np.ndarray) -> None:
    from ._buffers import TILE, copy_tiled
    if src.ndim != 2 or src.strides[0] >= src.strides[1] or src.size < TILE * TILE:
        np.copyto(out, src, casting="unsafe")  # same kind: only the byte order differs
    else:
        copy_tiled(out, src)  # a transposed kernel: cache-sized tiles, on every core


#: Pieces smaller than this are hashed and written inline (threads cost more than they save).
PIPELINE_BYTES = 2**20


class _Pipeline:
    """Writes and hashes each piece on two helper threads while the caller makes the next.

    Each piece is written (``os.write``, straight from its buffer) and hashed at the same
    time; writeback to disk is started as each piece is written (Linux ``sync_file_range``),
    so the final fsync has little left. At most two pieces are in flight, matching the two
    scratch buffers of :func:`_chunks`. All three stages release the GIL.
    """

    def __init__(self, fd: int):
        self.fd, self.offset = fd, os.lseek(fd, 0, os.SEEK_CUR)
        self.start_writeback = _writeback_starter()

    def __enter__(self) -> _Pipeline:
        from concurrent.futures import ThreadPoolExecutor
        self.hasher, self.writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.hasher.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True, cancel_futures=True)

    def _write(self, piece: memoryview, offset: int) -> None:
        _write_all(self.fd, piece)
        self.start_writeback(self.fd, offset, len(piece))

    def tensor(self, pieces: Iterator[memoryview], prefix: bytes) -> str:
        """Write and hash one tensor's pieces in order (``prefix``, its dtype and shape,
        hashed first); its ``sha256t:<hex>`` digest."""
        h = hashlib.new(DIGESTS[DIGEST][0])
        h.update(prefix)
        inflight: list[Any] = []  # futures of the pieces in flight, two per piece
        try:
            for piece in pieces:
                if len(piece) < PIPELINE_BYTES:
                    _settle(inflight, len(inflight))
                    h.update(piece)
                    _write_all(self.fd, piece)
                else:
                    inflight += [self.hasher.submit(h.update, piece),
                                 self.writer.submit(self._write, piece, self.offset)]
                    _settle(inflight, len(inflight) - 2)  # the piece before: its buffer is
                self.offset += len(piece)                 # the one made next
            _settle(inflight, len(inflight))
        except BaseException:
            from concurrent.futures import wait
            wait(inflight)  # no helper still reads a buffer that is being dropped
            raise
        return f"{DIGEST}:{h.hexdigest()}"


def _settle(jobs: list[Any], n: int) -> None:
    """Wait for the first ``n`` jobs (raising the first failure) and drop them."""
    for job in jobs[:n]:
        job.result()
    del jobs[:n]


def _writeback_starter() -> Callable[[int, int, int], None]:
    """``start(fd, offset, nbytes)``: begin writing that range to disk without waiting
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``); a no-op where unavailable."""
    try:
        import ctypes
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError, TypeError):  # not Linux/glibc
        return lambda fd, offset, nbytes: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> None:
        call(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE; advisory, errors ignored
    return start


def _create_temp(path: str, directory: str) -> tuple[int, str | None]:
    """A descriptor to write the new file to, and its temporary name (None: unnamed)."""
    if UNNAMED_TEMP:
        try:
            return os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600), None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise _os_error(path, e, "save") from None
            # a file system without O_TMPFILE: a named temporary file instead
    stem = os.path.basename(path)[:180]  # stays under NAME_MAX with the mark and suffix
    for _ in range(100):
        tmp = os.path.join(directory, f".{stem}{TEMP_MARK}{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600)
        except FileExistsError:
            continue
        except OSError as e:
            raise _os_error(path, e, "save") from None
        return fd, tmp
    raise CheckpointIOError(f"Cannot save to {path}: no free temporary name in {directory}.",
                            errno=errno.EEXIST, filename=path)


def _lock(fd: int) -> None:
    """Mark the temporary file as in use (released when the saver exits, even killed)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def _remove_stale_temps(path: str, directory: str) -> None:
    """Delete temporary files of earlier saves to ``path`` whose saver is gone (best effort)."""
    try:
        import fcntl
    except ImportError:
        return
    prefix = f".{os.path.basename(path)[:180]}{TEMP_MARK}"
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < STALE_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a saver holds it
            if os.path.samestat(os.fstat(fd), os.stat(entry.path, follow_symlinks=False)):
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0o022)  # read the umask; restored at once
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
