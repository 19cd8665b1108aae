"""Notebook display: HTML tables for Model, Param and summary, and value histograms per layer.

Jupyter calls ``_repr_html_``; the hooks in ``_model.py`` and ``_summary.py`` delegate here.
matplotlib is imported only by :func:`plot_histograms` (``pip install 'unifparam[plot]'``).

    >>> net            # in a notebook: a table of layers and their parameters
    >>> unifparam.plot_histograms(net)   # a Figure, one histogram per layer
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import UnsupportedError, fmt_shape

if TYPE_CHECKING:
    from ._model import Model, Param

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


def param_html(p: Param) -> str:
    """One parameter: name, shape, dtype, count, state, role, tied names."""
    return table(("name", "shape", "dtype", "params", "state", "role", "tied with"),
                 [(p.name, fmt_shape(p.shape), p.dtype, _count(p.shape), p.state, p.role,
                   ", ".join(p.aliases))])


def model_html(model: Model) -> str:
    """One row per layer (indented by depth): what it is and its parameters with shapes."""
    rows = []

    def visit(layer: Model, depth: int) -> None:
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


def plot_histograms(model: Model, bins: int = 30, *, include_bias: bool = True) -> Any:
    """A matplotlib Figure with one histogram of parameter values per layer that has any.

    Each axes is titled with the layer's path (and its weight's registered initializer)
    and pools that layer's parameters (its weights; with ``include_bias`` its biases too).
    Needs matplotlib (``pip install 'unifparam[plot]'``) and materialized parameters.

    >>> fig = unifparam.plot_histograms(net)
    >>> fig.axes[1].get_title()
    '1: Normal'
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UnsupportedError("plot_histograms needs matplotlib: "
                               "pip install 'unifparam[plot]'.") from e
    from ._lazy import np

    layers: list[tuple[str, Any]] = []

    def visit(layer: Model) -> None:
        kids = list(layer)
        if not kids:
            own = [getattr(layer, local) for local in layer._node.params]
            own = [p for p in own if include_bias or p.role != "bias"]
            if own:
                title = layer.path or "(model)"
                registered = next((p.init for p in own if p.role == "weight"), None)
                if registered is not None:  # the weight's initializer, e.g. "0: Normal"
                    title += f": {type(registered).__name__}"
                layers.append((title, np.concatenate([p.numpy().ravel() for p in own])))
        for kid in kids:
            visit(kid)

    visit(model)
    if not layers:
        raise UnsupportedError(f"Layer '{model.path or 'model'}' has no parameters to plot.")
    cols = min(len(layers), 4)
    grid = math.ceil(len(layers) / cols)
    fig = _png_figure(Figure)(figsize=(3.2 * cols, 2.4 * grid), layout="constrained")
    for i, (title, values) in enumerate(layers):
        ax = fig.add_subplot(grid, cols, i + 1)
        ax.hist(values, bins=bins)
        ax.set_title(title)
        ax.set_xlabel("value")
    return fig


@functools.cache
def _png_figure(base: type) -> type:
    """A Figure class that shows itself as PNG in a notebook, whatever backend is on."""

    class _Figure(base):  # type: ignore[misc, valid-type]
        def _repr_png_(self) -> bytes:
            import io

            buf = io.BytesIO()
            self.savefig(buf, format="png", metadata={"Software": None})
            return buf.getvalue()

    _Figure.__name__ = _Figure.__qualname__ = "Figure"
    return _Figure
