"""Value histograms per layer, as a matplotlib Figure that shows itself in a notebook.

matplotlib is imported only when called (``pip install 'unifparam[plot]'``).

    >>> unifparam.plot_histograms(net)   # a Figure, one histogram per layer
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from .errors import UnsupportedError

if TYPE_CHECKING:
    from ._model import Model


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
        from ._install import hint
        raise UnsupportedError(hint("plot_histograms needs matplotlib: "
                                    "pip install 'unifparam[plot]'.")) from e
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
