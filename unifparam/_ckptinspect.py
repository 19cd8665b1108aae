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
from .errors import UnifparamError, UnsupportedError, fmt_shape

Shape = tuple[int | None, ...]


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
             f"Saved by: unifparam {meta.get('unifparam_version', '?')} on backend "
             f"{meta.get('backend', '?')}" if "unifparam_version" in meta
             else "Saved by: not unifparam (plain safetensors file)"]
    body = _spec_summary(ck)
    if body is None:
        if ck.spec_json is not None:
            lines.append("(the recorded spec does not match the tensors; showing the tensors)")
        body = _table(ck)
    return "\n".join([*lines, "", body])


def _spec_summary(ck: Checkpoint) -> str | None:
    from ._model import Model
    from ._specio import spec_from_json
    from ._state import state_from_spec
    from ._summary import summary
    from ._verbs import tie
    if ck.spec_json is None:
        return None
    try:
        spec = spec_from_json(ck.spec_json)
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
            return None
        if not st.all_in(MATERIALIZED):
            return None
        return str(summary(net))
    except (UnifparamError, KeyError, ValueError, TypeError):
        return None


def _table(ck: Checkpoint) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in (("name", "left"), ("shape", "left"), ("dtype", "left"),
                         ("params", "right"), ("trainable", "left"), ("tied with", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name in ck.order():
        t = ck.tensors[name]
        tied = [f"{x.name}{' (transposed)' if x.transpose else ''}" for x in ck.ties
                if x.root == name]
        trainable = ck.trainable.get(name)
        table.add_row(name, fmt_shape(t.shape), t.dtype, f"{math.prod(t.shape):,}",
                      "?" if trainable is None else ("yes" if trainable else "no"),
                      ", ".join(tied))
    out = io.StringIO()
    Console(file=out, width=100, color_system=None, force_terminal=False, highlight=False,
            emoji=False).print(table)
    return "\n".join(s.rstrip() for s in out.getvalue().rstrip().splitlines())


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
