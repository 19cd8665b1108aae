"""The Flax native state: a linen module plus a flat store of ROOT leaves, and tie expansion.

Flax values are immutable, so every change makes a new :class:`FlaxState`. Tied uses of a
parameter are not stored: at apply time :func:`expand` inserts each from its root leaf
(transposed if asked), so ``jax.grad`` with respect to the root adds up every use.

    >>> st = FlaxState(module, {("params", "layers_0", "kernel"): w})     # doctest: +SKIP
    >>> module.apply(st.variables(), x)                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
from flax import linen, traverse_util

from ._layers import relayout

Path = tuple[str, ...]


@dataclass(frozen=True)
class Leaf:
    """A parameter reference: its pytree path (collection first) and its layout kind.

    ``layout`` is ``"dense"`` (kernel ``(in, out)``), ``"conv"`` (``(kh, kw, in, out)``) or
    ``"plain"`` (same as canonical).
    """

    path: Path
    layout: str = "plain"


@dataclass(frozen=True)
class LayerInfo:
    """A layer at a canonical path: its linen module and its scope path in the pytree."""

    module: Any
    prefix: Path
    spec: Any = None                      # the unifparam.nn spec layer (spec-built models)
    leaves: Mapping[str, Leaf] = field(default_factory=dict)  # canonical local -> Leaf


@dataclass(frozen=True)
class FlaxState:
    """``(module, variables)`` as unifparam holds it; every primitive returns a new one.

    ``leaves`` maps pytree paths to jax arrays, or to ``jax.ShapeDtypeStruct`` while
    abstract; ``ties`` maps a tied use's path to ``(root Leaf, own Leaf, transpose)``.
    """

    module: linen.Module
    leaves: Mapping[Path, Any]
    ties: Mapping[Path, tuple[Leaf, Leaf, bool]] = field(default_factory=dict)
    layers: Mapping[str, LayerInfo] = field(default_factory=dict)
    owners: Mapping[Path, Any] = field(default_factory=dict)  # scope path -> linen module
    example: tuple[Any, ...] | None = None  # input signature for module.init (adopted models)
    compute: Any = None  # a mixed policy's compute dtype: floats cast to it for apply

    def replace(self, **changes: Any) -> FlaxState:
        return dataclasses.replace(self, **changes)

    def with_leaves(self, updates: Mapping[Path, Any], drop: tuple[Path, ...] = ()) -> FlaxState:
        leaves = {**self.leaves, **updates}
        for p in drop:
            leaves.pop(p, None)
        return self.replace(leaves=leaves)

    def value(self, path: Path) -> Any:
        """The value at ``path``, expanded from its root if it is a tied use."""
        return tied_value(self.leaves, self.ties, path)

    def variables(self, expanded: bool = True) -> dict[str, Any]:
        """The nested variables dict (``{'params': ..., 'batch_stats': ...}``), with every
        tied use inserted from its root unless not ``expanded``."""
        return expand(self.leaves, self.ties if expanded else {})


def tied_value(leaves: Mapping[Path, Any], ties: Mapping[Path, tuple[Leaf, Leaf, bool]],
               path: Path) -> Any:
    """Leaf ``path`` built from its root: canonical of the root, transposed if asked, native."""
    if path not in ties:
        return leaves[path]
    src, dst, transpose = ties[path]
    value = tied_value(leaves, ties, src.path)
    if isinstance(value, jax.ShapeDtypeStruct):
        shape = relayout(src.layout, tuple(value.shape))
        shape = shape[::-1] if transpose else shape
        return jax.ShapeDtypeStruct(relayout(dst.layout, shape, to_native=True), value.dtype)
    value = relayout(src.layout, value)
    return relayout(dst.layout, value.T if transpose else value, to_native=True)


def expand(leaves: Mapping[Path, Any], ties: Mapping[Path, tuple[Leaf, Leaf, bool]]
           ) -> dict[str, Any]:
    """Nested variables with every tied use inserted from its root (differentiable)."""
    flat = {**leaves, **{p: tied_value(leaves, ties, p) for p in ties}}
    return traverse_util.unflatten_dict(flat) if flat else {}


def tied_module(st: FlaxState) -> linen.Module:
    """``st.module`` wrapped so that ``apply`` expands ties from root-only variables.

    Uses ``flax.linen.map_variables``; without ties it is ``st.module`` itself.
    """
    if not st.ties:
        return st.module
    ties = dict(st.ties)

    def expand_in(variables: Any) -> Any:
        return expand(traverse_util.flatten_dict(variables), ties)

    cls = linen.map_variables(type(st.module), True, trans_in_fn=expand_in, init=False)
    kwargs = {f.name: getattr(st.module, f.name) for f in dataclasses.fields(st.module)
              if f.init and f.name not in ("parent", "name")}
    return cls(**kwargs)
