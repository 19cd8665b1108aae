"""``unifparam.summary``: structure and parameter table, the same text on every backend.

    >>> print(unifparam.summary(net))
"""

from __future__ import annotations

import io
import math

from ._model import Model, render
from .errors import fmt_shape


class Summary(str):
    """The summary text; shows itself as-is in a REPL and as HTML tables in a notebook."""

    rows: tuple[tuple[str, ...], ...] = ()
    structure = total = ""

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        from ._display import summary_html
        return summary_html(self.rows, self.structure, self.total)


def summary(model: Model, width: int = 100) -> Summary:
    """Printed structure, then one row per storage: name, shape, dtype, count, state, ties.

    Unknown dimensions show as None and are left out of the counts. The text depends only
    on the model (spec) and what was done to it, never on the backend.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ._verbs import model_handle, params

    model_handle(model, "summary")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in (("name", "left"), ("shape", "left"), ("dtype", "left"),
                         ("params", "right"), ("state", "left"), ("tied with", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    total = trainable = unknown = 0
    rows = []
    for name, p in params(model).items():
        shape = p.shape
        known = shape is not None and None not in shape
        count = math.prod(shape) if known else None  # type: ignore[arg-type]
        if count is None:
            unknown += 1
        else:
            total += count
            trainable += count if p.trainable else 0
        flags = "" if p.trainable else " (non-trainable)"
        rows.append((name, fmt_shape(shape), p.dtype, "?" if count is None else f"{count:,}",
                     p.state + flags, ", ".join(p.aliases)))
        table.add_row(*rows[-1])
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, legacy_windows=False)
    structure = render(model._st, model._node)
    console.print(structure, markup=False)
    console.print(table)
    line = (f"Total params: {total:,}  Trainable: {trainable:,}  "
            f"Non-trainable: {total - trainable:,}")
    if unknown:
        line += f"  ({unknown} with unknown shapes, not counted)"
    console.print(line, markup=False)
    text = Summary("\n".join(s.rstrip() for s in out.getvalue().rstrip().splitlines()))
    text.rows, text.structure, text.total = tuple(rows), structure, line
    return text
