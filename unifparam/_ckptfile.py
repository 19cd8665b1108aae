"""The checkpoint file: a plain safetensors file, checked strictly, written atomically.

Reading never runs code from the file: the header is bounded JSON, every name, dtype, shape
and offset is checked before any tensor is touched, and tensors are memory-mapped views.

    >>> ck = read("model.safetensors")          # raises CheckpointFormatError if malformed
    >>> ck.tensors["0.weight"].shape, ck.ties
    ((8, 4), [])
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._lazy import np
from .errors import CheckpointFormatError, CheckpointNotFoundError

FORMAT = "unifparam.checkpoint"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
MAX_NAME = 512
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*")
#: safetensors dtype code <-> numpy dtype name (bf16 and fp8 have no numpy dtype).
DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
          "F16": "float16", "U32": "uint32", "I32": "int32", "F32": "float32", "U64": "uint64",
          "I64": "int64", "F64": "float64"}
CODES = {v: k for k, v in DTYPES.items()}


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


@dataclass
class Checkpoint:
    """A validated checkpoint header: tensors, ties, per-parameter facts, recorded spec."""

    path: str
    size: int
    data_start: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    ties: list[Tie] = field(default_factory=list)
    trainable: dict[str, bool] = field(default_factory=dict)

    @property
    def spec_json(self) -> str | None:
        return self.metadata.get("spec")

    def tied_root(self, name: str) -> str:
        """The stored name that holds ``name``'s values."""
        return next((t.root for t in self.ties if t.name == name), name)

    def order(self) -> list[str]:
        """Stored names in the saved model's order (the header's own order is by dtype)."""
        return [*(n for n in self.trainable if n in self.tensors),
                *(n for n in self.tensors if n not in self.trainable)]

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        """Shape of a stored name or of a tied name (from its root)."""
        if name in self.tensors:
            return self.tensors[name].shape
        tie = next((t for t in self.ties if t.name == name), None)
        if tie is None:
            return None
        shape = self.tensors[tie.root].shape
        return tuple(reversed(shape)) if tie.transpose else shape

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor as a copy-on-write memory-mapped view (no data read until used)."""
        if not self.tensors:
            return {}
        buf = np.memmap(self.path, dtype=np.uint8, mode="c")
        if buf.size != self.size:
            raise CheckpointFormatError(f"{self.path} changed size while being loaded.")
        out = {}
        for name, t in self.tensors.items():
            start = self.data_start + t.begin
            arr = buf[start:self.data_start + t.end].view(np.dtype(t.dtype).newbyteorder("<"))
            arr = arr.reshape(t.shape)
            out[name] = arr if arr.flags.aligned and arr.dtype.isnative else arr.astype(t.dtype)
        return out


def _bad(path: str, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path} is not a valid unifparam checkpoint: {why}. Re-save it "
                                 f"with unifparam.save, or check that it was copied completely.")


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate the header of the checkpoint at ``path`` (no tensor data is read)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"it has {size} bytes, fewer than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise _bad(path, f"its header claims {n:,} bytes, over the limit of "
                                 f"{MAX_HEADER_BYTES:,}")
            if n > size - 8:
                raise _bad(path, f"its header claims {n:,} bytes but the file has {size:,} "
                                 f"(truncated?)")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"No checkpoint at {path}. Check the path, or save one "
                                      f"with unifparam.save(net, path).") from None
    except IsADirectoryError:
        raise CheckpointNotFoundError(f"{path} is a directory, not a checkpoint file.") from None
    header = _json(path, raw, "header")
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise _bad(path, "its __metadata__ is not a mapping of strings to strings")
    tensors = {name: _tensor(path, name, entry) for name, entry in header.items()}
    _check_offsets(path, tensors, size - 8 - n)
    ck = Checkpoint(path, size, 8 + n, tensors, meta)
    _read_metadata(ck)
    return ck


def _json(path: str, raw: bytes | str, what: str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # also UnicodeDecodeError, int digit limits
        raise _bad(path, f"its {what} is not valid JSON ({type(e).__name__})") from None


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
    nbytes = math.prod(shape) * np.dtype(np_dtype).itemsize
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


def _read_metadata(ck: Checkpoint) -> None:
    """Parse unifparam's own metadata entries (absent in a plain safetensors file)."""
    meta, path = ck.metadata, ck.path
    if meta.get("format", FORMAT) != FORMAT:
        raise _bad(path, f"its metadata format is {meta['format'][:40]!r}, not {FORMAT!r}")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise _bad(path, f"it has format version {meta['format_version'][:20]!r}; this "
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
    if "spec" in meta:
        _json(path, meta["spec"], "recorded spec")  # decoded (and checked) by _specio


def write(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
          metadata: Mapping[str, str]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename.

    A crash or kill at any point leaves the previous file at ``path`` intact.
    """
    from safetensors import TensorSpec, serialize_file

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        os.close(fd)
        specs, alive = {}, []  # safetensors reads raw pointers: keep every buffer alive
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            alive.append(arr)
            specs[name] = TensorSpec(dtype=arr.dtype.name, shape=arr.shape,
                                     data_ptr=arr.ctypes.data, data_len=arr.nbytes)
        serialize_file(specs, tmp, metadata=dict(metadata))
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
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
