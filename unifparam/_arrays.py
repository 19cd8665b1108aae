"""Arrays, lists and dicts of arrays in one safetensors file, from and to any backend
(the book's File I/O: ``torch.save(x, ...)``, ``npx.save``, ...), written and read by the
checkpoint file's one writer and reader.

    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.safetensors")
    >>> save_arrays({"w": np.zeros(2), "b": np.ones(1)}, path)
    >>> load_arrays(path)
    {'w': array([0., 0.]), 'b': array([1.])}
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import _ckptfile
from .errors import ArgumentError, CheckpointFormatError

KEY = "arrays"  # the metadata entry saying what was saved: "array", "list" or "dict"


def _as_numpy(value: Any, where: str) -> Any:
    import numpy as np

    from ._convert import to_numpy
    if isinstance(value, (dict, list, tuple)) or not (
            hasattr(value, "shape") or isinstance(value, (int, float))):
        raise ArgumentError(f"save_arrays: {where} is a {type(value).__name__}; it takes an "
                            f"array, a list of arrays or a dict of str -> array (one level).")
    arr = np.asarray(to_numpy(value))
    if arr.dtype.name not in _ckptfile.CODES:
        raise ArgumentError(f"save_arrays: {where} has dtype {arr.dtype}, which safetensors "
                            f"cannot store.")
    return np.ascontiguousarray(arr)


def save_arrays(obj: Any, path: str | os.PathLike[str]) -> None:
    """Save an array (any backend's, or numpy), a list of arrays or a dict of str -> array
    to ``path`` (safetensors, atomically); :func:`load_arrays` gives it back as numpy.

    >>> save_arrays([np.arange(4), np.zeros(3)], "x-files.safetensors")  # doctest: +SKIP
    """
    if isinstance(obj, dict):
        kind = "dict"
        bad = [k for k in obj if not isinstance(k, str) or not k]
        if bad:
            raise ArgumentError(f"save_arrays: dict keys must be non-empty str, got {bad[0]!r}.")
        named = {k: _as_numpy(v, f"entry {k!r}") for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        kind = "list"
        named = {str(i): _as_numpy(v, f"item {i}") for i, v in enumerate(obj)}
    else:
        kind = "array"
        named = {"array": _as_numpy(obj, "the value")}
    meta = {"format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION,
            KEY: json.dumps({"kind": kind, "order": list(named)})}
    _ckptfile.write(path, named, meta)


def load_arrays(path: str | os.PathLike[str]) -> Any:
    """What :func:`save_arrays` wrote to ``path``: a numpy array, a list or a dict of them
    (a plain safetensors file reads as a dict, by name)."""
    import numpy as np
    ck = _ckptfile.read(path)
    arrays = ck.arrays()
    got = {name: np.array(arrays[name]) for name in ck.tensors}  # copies: the file may go
    try:
        layout = json.loads(ck.metadata.get(KEY, '{"kind": "dict"}'))
        kind = layout["kind"]
        order = layout.get("order", sorted(got))
    except (ValueError, KeyError, TypeError):
        raise CheckpointFormatError(f"{ck.path}: its '{KEY}' metadata is not what "
                                    f"save_arrays writes.") from None
    if sorted(order) != sorted(got) or kind not in ("array", "list", "dict"):
        raise CheckpointFormatError(f"{ck.path}: its '{KEY}' metadata does not match the "
                                    f"stored tensors {sorted(got)[:5]}.")
    if kind == "array":
        return got["array"]
    if kind == "list":
        return [got[name] for name in order]
    return {name: got[name] for name in order}
