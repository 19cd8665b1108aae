"""Notebook display: HTML tables for Model, Param and summary.

Jupyter calls ``_repr_html_``; the hooks in ``_model.py`` and ``_summary.py`` delegate here,
so this module needs nothing from them (histograms are :mod:`unifparam._plots`).

    >>> net            # in a notebook: a table of layers and their parameters
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import fmt_shape

STYLE = "border-collapse:collapse;font-family:monospace;text-align:left"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """An HTML table; every cell is escaped."""
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return (f"<table class='unifparam' style='{STYLE}'>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _count(shape: tuple[int | None, ...] | None) -> str:
    if shape is None or None in shape:
        return "?"
    return f"{math.prod(shape):,}"  # type: ignore[arg-type]


def param_html(p: Any) -> str:
    """One :class:`~unifparam.Param`: name, shape, dtype, count, state, role, tied names."""
    return table(("name", "shape", "dtype", "params", "state", "role", "tied with"),
                 [(p.name, fmt_shape(p.shape), p.dtype, _count(p.shape), p.state, p.role,
                   ", ".join(p.aliases))])


def model_html(model: Any) -> str:
    """A :class:`~unifparam.Model`: one row per layer (indented by depth), what it is and
    its parameters with shapes."""
    rows = []

    def visit(layer: Any, depth: int) -> None:
        node = layer._node
        kids = list(layer)
        if kids:
            text = f"{node.kind}({len(kids)} layers)"
        else:
            text = repr(layer)
        own = ", ".join(f"{local} {fmt_shape(getattr(layer, local).shape)}"
                        for local in node.params)
        key = node.path.rsplit(".", 1)[-1] if node.path else "(model)"
        rows.append(("\u00a0\u00a0" * depth + key, text, own))
        for kid in kids:
            visit(kid, depth + 1)

    visit(model, 0)
    return table(("layer", "kind", "parameters"), rows)


def summary_html(rows: Sequence[Sequence[str]], structure: str, total: str) -> str:
    """The summary: its structure as preformatted text, the parameter table, the totals."""
    return (f"<pre>{html.escape(structure)}</pre>"
            + table(("name", "shape", "dtype", "params", "state", "tied with"), rows)
            + f"<p>{html.escape(total)}</p>")
