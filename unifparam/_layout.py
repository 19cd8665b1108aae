"""Sharding layouts: canonical-name patterns -> one mesh axis (or None) per dimension.

A layout is written once for every framework, in canonical names and canonical layout
(a dense weight is ``(out, in)`` everywhere)::

    >>> layout = {"*.weight": ("model", None), "blocks.*.attn.*": (None, "data")}

Patterns are :mod:`fnmatch` patterns (``*`` also crosses dots) tried in the layout's order
against each storage's canonical name and then the other names of it (a tie, a shared
layer); the first match wins. Storages no pattern matches are replicated. Everything is
checked here, before any allocation: unknown axis names, an axis used twice, a rank that
differs from the parameter's, a dimension the mesh axis does not divide, a pattern that
matches no parameter: each a :class:`~unifparam.errors.LayoutError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from .errors import LayoutError, fmt_shape

Placement = tuple[str | None, ...]
Layout = Mapping[str, Sequence[str | None]]


def check_layout(layout: Layout, axes: Mapping[str, int]) -> dict[str, Placement]:
    """``layout`` as pattern -> tuple, with every axis name known to the mesh and used once.

    >>> check_layout({"*.weight": ["model", None]}, {"data": 2, "model": 4})
    {'*.weight': ('model', None)}
    """
    if not isinstance(layout, Mapping):
        raise LayoutError(f"layout must be a dict of name pattern -> one mesh axis name or "
                          f"None per dimension, e.g. {{'*.weight': ('model', None)}}; got "
                          f"{type(layout).__name__}.")
    out: dict[str, Placement] = {}
    for pattern, spec in layout.items():
        if not isinstance(pattern, str) or isinstance(spec, str) or \
                not isinstance(spec, Sequence):
            raise LayoutError(f"Layout entry {pattern!r}: {spec!r} must be a tuple with one "
                              f"mesh axis name or None per dimension, e.g. ('model', None).")
        spec = tuple(spec)
        for axis in spec:
            if axis is not None and axis not in axes:
                raise LayoutError(f"Layout entry {pattern!r}: {spec!r} names mesh axis "
                                  f"{axis!r}, but the mesh has axes {tuple(axes)}. Use one of "
                                  f"them or None (not sharded along that dimension).")
        used = [a for a in spec if a is not None]
        if len(used) != len(set(used)):
            raise LayoutError(f"Layout entry {pattern!r}: {spec!r} uses a mesh axis twice; "
                              f"each mesh axis can split one dimension of a parameter.")
        out[pattern] = spec
    return out


def resolve(layout: Layout, axes: Mapping[str, int], shapes: Mapping[str, tuple[int, ...]],
            names: Mapping[str, Sequence[tuple[str, bool]]]) -> dict[str, Placement]:
    """Each storage's placement (a mesh axis or None per canonical dimension).

    ``shapes`` maps the storages to place (canonical root name) to their complete shapes;
    ``names`` maps every storage of the model to all its names as ``(name, transposed)``,
    its own first. A pattern must match some name of the model.

    >>> resolve({"*.weight": ("m", None)}, {"m": 2}, {"0.weight": (4, 3), "0.bias": (4,)},
    ...         {"0.weight": [("0.weight", False)], "0.bias": [("0.bias", False)]})
    {'0.weight': ('m', None), '0.bias': (None,)}
    """
    specs = check_layout(layout, axes)
    every = [n for uses in names.values() for n, _ in uses]
    for pattern in specs:
        if not any(fnmatchcase(n, pattern) for n in every):
            raise LayoutError(f"Layout pattern {pattern!r} matches no parameter. Parameters "
                              f"are named like {', '.join(map(repr, every[:4]))}: see "
                              f"unifparam.params(net).")
    out: dict[str, Placement] = {}
    for root, shape in shapes.items():
        out[root] = (None,) * len(shape)
        match = next(((p, s, t) for p, s in specs.items()
                      for n, t in names.get(root, [(root, False)]) if fnmatchcase(n, p)), None)
        if match is None:
            continue
        pattern, spec, transposed = match
        if len(spec) != len(shape):
            raise LayoutError(f"Layout entry {pattern!r}: {spec!r} has {len(spec)} dimensions "
                              f"but parameter {root!r} {fmt_shape(shape)} has {len(shape)}. "
                              f"Give a pattern that matches only parameters of that rank "
                              f"(e.g. a more specific one first).")
        spec = spec[::-1] if transposed else spec
        for d, axis in enumerate(spec):
            if axis is not None and shape[d] % axes[axis]:
                raise LayoutError(f"Layout entry {pattern!r} splits dimension {d} of parameter "
                                  f"{root!r} {fmt_shape(shape)} over mesh axis {axis!r} of "
                                  f"size {axes[axis]}, which does not divide {shape[d]}. Use "
                                  f"a size divisible by {axes[axis]} or another axis.")
        out[root] = spec
    return out


def names_of(st: object) -> dict[str, list[tuple[str, bool]]]:
    """Every storage of a model state with all its names ``(name, transposed)``."""
    out: dict[str, list[tuple[str, bool]]] = {r: [(r, False)] for r in st.slots}  # type: ignore
    for name, alias in st.aliases.items():  # type: ignore[attr-defined]
        out.setdefault(alias.root, [(alias.root, False)]).append((name, alias.transpose))
    return out


def placements(model: object, layout: Layout, axes: Mapping[str, int]
               ) -> dict[str, Placement]:
    """Where ``layout`` puts each parameter of ``model`` on a mesh of these axis sizes.

    A dry run of ``materialize(net, mesh=..., layout=...)``: same checks, no mesh and no
    memory needed (shapes must be known, e.g. after ``materialize(net, X, abstract=True)``).

    >>> unifparam.placements(net, {"*.weight": ("model", None)}, {"data": 2, "model": 4})
    {'0.weight': ('model', None), '0.bias': (None,)}
    """
    from .errors import InputShapeError, UnsupportedError
    st = getattr(model, "_st", None)
    if st is None:
        raise UnsupportedError(f"unifparam.placements takes a model handle from "
                               f"unifparam.build, got {type(model).__name__}.")
    shapes = {}
    for root in st.slots:
        shape = st.status(root)[0]
        if shape is None or None in shape:
            raise InputShapeError(f"Parameter {root!r} has unknown shape "
                                  f"{fmt_shape(shape)}: materialize first, e.g. "
                                  f"unifparam.materialize(net, X, abstract=True).")
        shapes[root] = tuple(int(d) for d in shape)
    return resolve(layout, axes, shapes, names_of(st))
