"""``inspect_file``: a checkpoint's summary, printed without any framework.

When the file records its spec, the spec is rebuilt on a shapes-only backend that reads the
file's header, the recorded ties are replayed through the core's tie bookkeeping, and
:func:`unifparam.summary` prints it: the same text as for the saved model.

    >>> print(describe(_ckptfile.read("net.safetensors")))
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from . import nn
from ._backend import DEFERRED, MATERIALIZED, Backend, NativeParam, Plan
from ._ckptfile import Checkpoint
from .errors import SpecCycleError, UnifparamError, UnsupportedError, fmt_shape

Shape = nn.Shape
#: The tensor table shows at most this many rows (then a count of the rest).
MAX_TABLE_ROWS = 1000
#: Files with more tensors than this are shown as a table, without rebuilding the spec.
MAX_SPEC_TENSORS = 10_000


class ShapesBackend(Backend):
    """A backend with shapes and no values: enough for ``summary`` of a checkpoint."""

    name = "checkpoint-file"
    capabilities = frozenset({"transpose_tie"})

    def __init__(self, ck: Checkpoint):
        self.ck = ck

    def build(self, spec: nn.Layer) -> tuple[Any, dict[str, NativeParam]]:
        natives: dict[str, NativeParam] = {}
        for path, layer in nn.first_uses(spec):
            for d in layer.param_decls():
                name = nn.join(path, d.name)
                info = self.ck.tensors.get(self.ck.tied_root(name))
                natives[name] = NativeParam(name, name, d.shape, d.role, d.axes, d.trainable,
                                            info.dtype if info else "float32", name)
        return None, natives

    def status(self, native: Any, ref: Any) -> tuple[Shape | None, str]:
        shape = self.ck.shape_of(ref)
        return (shape, MATERIALIZED) if shape is not None else (None, DEFERRED)

    def alias(self, native: Any, src: Any, dst: Any, transpose: bool) -> Any:
        return native

    def _no_values(self, *args: Any) -> Any:
        raise UnsupportedError("A checkpoint summary has shapes only, no values.")

    def allocate(self, native: Any, plan: Plan) -> Any:
        return self._no_values()

    def read(self, native: Any, ref: Any) -> Any:
        return self._no_values()

    def write(self, native: Any, ref: Any, value: Any) -> Any:
        return self._no_values()

    def reset(self, native: Any, refs: Sequence[Any]) -> Any:
        return self._no_values()

    def run(self, native: Any, inputs: Sequence[Any], training: bool) -> Any:
        return self._no_values()


def describe(ck: Checkpoint) -> str:
    """Header lines, then the model summary (spec recorded) or a parameter table."""
    meta = ck.metadata
    count = sum(math.prod(t.shape) for t in ck.tensors.values())
    lines = [f"Checkpoint: {ck.path}",
             f"Size: {ck.size:,} bytes ({_human(ck.size)}), {len(ck.tensors)} tensors, "
             f"{count:,} values",
             f"Saved by: unifparam {meta.get('unifparam_version', '?')[:40]} on backend "
             f"{meta.get('backend', '?')[:40]}" if not ck.foreign
             else f"Saved by: not unifparam: {ck.writer}",
             "Verified: yes, each tensor (bytes, dtype, shape) against its SHA-256"
             if ck.verified else
             "Verified: no (no digests recorded: values are read as stored)" if ck.foreign
             else "Verified: no (verify=False)"]
    parts = getattr(ck, "parts", None)
    if parts:
        lines.insert(1, f"Shards: {len(parts)} files and the index")
    body, why = _spec_summary(ck)
    if body is None:
        if why:
            lines.append(f"(the recorded spec {why}; showing the tensors)")
        body = _table(ck)
    return "\n".join([*lines, "", body])


def _spec_summary(ck: Checkpoint) -> tuple[str | None, str]:
    """The saved model's summary, or None and why it cannot be shown (a file is untrusted)."""
    if ck.spec_json is None:
        return None, ""
    if len(ck.tensors) > MAX_SPEC_TENSORS:
        return None, f"is not rebuilt for over {MAX_SPEC_TENSORS:,} tensors"
    try:
        return _rebuild(ck)
    except RecursionError:
        return None, "is nested too deeply"
    except Exception as e:  # any failure on a hostile file falls back to the tensor table
        return None, f"could not be rebuilt ({type(e).__name__})"


def _rebuild(ck: Checkpoint) -> tuple[str | None, str]:
    from ._model import Model
    from ._specio import spec_from_json
    from ._state import state_from_spec
    from ._summary import summary
    from ._verbs import tie
    try:
        try:
            spec = spec_from_json(ck.spec_json or "")
        except SpecCycleError:  # refused as it is built
            return None, "contains itself"
        uses = _uses(spec, MAX_SPEC_TENSORS)
        if uses is None:
            return None, "contains itself"
        if uses > MAX_SPEC_TENSORS:
            return None, f"has over {MAX_SPEC_TENSORS:,} layer uses"
        if not _shapes_fit(spec, ck):
            return None, "does not match the tensors' shapes"
        be = ShapesBackend(ck)
        st = state_from_spec(be, spec)
        net = Model(st, st.root)
        for t in ck.ties:
            if t.explicit:
                tie(net, t.root, t.name, transpose=t.transpose)
        st = net._st
        recorded = {t.name: (t.root, t.transpose) for t in ck.ties}
        if set(st.slots) != set(ck.tensors) or {n: (a.root, a.transpose) for n, a in
                                                st.aliases.items()} != recorded:
            return None, "does not match the tensors' names or ties"
        if not st.all_in(MATERIALIZED):
            return None, "does not match the tensors"
        return str(summary(net)), ""
    except (UnifparamError, KeyError, ValueError, TypeError) as e:
        return None, f"does not match the tensors ({type(e).__name__})"


def _uses(spec: nn.Layer, cap: int) -> int | None:
    """Layer uses of ``spec`` counted with repeats (capped at ``cap + 1``); None if cyclic.

    A recorded spec can make a layer contain itself (walking it never ends) or reuse layers
    so that the model has exponentially many uses; both are refused before building.
    """
    total: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[nn.Layer, bool]] = [(spec, False)]
    while stack:
        layer, children_done = stack.pop()
        key = id(layer)
        if children_done:
            visiting.discard(key)
            total[key] = min(cap + 1, 1 + sum(total[id(c)] for _, c in layer.children()))
            continue
        if key in total:
            continue
        if key in visiting:
            return None
        visiting.add(key)
        stack.append((layer, True))
        for _, child in layer.children():
            if id(child) in visiting:
                return None
            if id(child) not in total:
                stack.append((child, False))
    return total[id(spec)]


def _shapes_fit(spec: nn.Layer, ck: Checkpoint) -> bool:
    """Whether each stored tensor has the rank and known sizes the spec declares for it."""
    for path, layer in nn.first_uses(spec):
        for d in layer.param_decls():
            shape = ck.shape_of(nn.join(path, d.name))
            if shape is None:
                continue
            if len(shape) != len(d.shape) or any(
                    want is not None and want != got for want, got in zip(d.shape, shape)):
                return False
    return True


def _table(ck: Checkpoint) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in (("name", "left"), ("shape", "left"), ("dtype", "left"),
                         ("params", "right"), ("trainable", "left"), ("tied with", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    tied_to: dict[str, list[str]] = {}
    for x in ck.ties:
        tied_to.setdefault(x.root, []).append(f"{x.name}{' (transposed)' if x.transpose else ''}")
    names = ck.order()
    for name in names[:MAX_TABLE_ROWS]:
        t = ck.tensors[name]
        tied = tied_to.get(name, [])
        trainable = ck.trainable.get(name)
        table.add_row(name, fmt_shape(t.shape), t.dtype, f"{math.prod(t.shape):,}",
                      "?" if trainable is None else ("yes" if trainable else "no"),
                      ", ".join(tied))
    out = io.StringIO()
    Console(file=out, width=100, color_system=None, force_terminal=False, highlight=False,
            emoji=False).print(table)
    text = "\n".join(s.rstrip() for s in out.getvalue().rstrip().splitlines())
    if len(names) > MAX_TABLE_ROWS:
        text += f"\n... and {len(names) - MAX_TABLE_ROWS:,} more tensors"
    return text


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
