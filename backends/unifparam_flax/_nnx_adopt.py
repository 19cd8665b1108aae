"""Describe native Flax NNX modules in canonical terms, and find their variables again.

Canonical names of an adopted NNX module follow its attribute path, joined by dots
(``layers.0``, ``encoder.linear1``), with the variable's own name mapped to PyTorch's:
``kernel``, ``embedding`` and ``scale`` become ``weight``, a ``BatchNorm``'s ``mean`` and
``var`` become ``running_mean`` and ``running_var``; other names are kept (``bias`` is
``bias``). Layouts are canonical: an ``nnx.Linear`` kernel ``(in, out)`` reads as
``(out, in)``, an ``nnx.Conv`` kernel ``(kh, kw, in, out)`` as ``(out, in, kh, kw)``; other
kernels keep their native layout. ``nnx.Param`` is trainable, ``nnx.BatchStat``,
:class:`Constant` and custom ``nnx.Variable`` types of floating values are not; rng
keys and counts, sown intermediates and caches are not parameters. A
submodule used in two places is one storage, listed under the first attribute path met
(definition order).

    >>> class MLP(nnx.Module):                                            # doctest: +SKIP
    ...     def __init__(self, rngs):
    ...         self.linear1 = nnx.Linear(4, 8, rngs=rngs)
    >>> [p.name for p in describe(MLP(nnx.Rngs(0)))[0].children[0][1].params.values()]
    ['linear1.weight', 'linear1.bias']                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from unifparam import NativeLayer, NativeParam, nn
from unifparam.roles import classify, family_of, local_name

from ._layers import layout_of, layout_perm, relayout

Keys = tuple[str, ...]


@dataclass(frozen=True)
class Ref:
    """Where a parameter lives: the owning module's attribute path, the attribute, the layout
    (``dense``, ``conv`` or ``plain``). Resolved from the root each time, so it stays valid
    when a placeholder layer is replaced or on a structurally equal module (gradients)."""

    keys: Keys
    attr: str
    layout: str


def child(obj: Any, key: str) -> Any:
    """``obj``'s member ``key``: a list index, a mapping key or an attribute."""
    if isinstance(obj, (list, tuple, nnx.List)):
        return obj[int(key)]
    if isinstance(obj, (dict, nnx.Dict)):
        return obj[key]
    return getattr(obj, key)


def module_at(root: Any, keys: Keys) -> Any:
    for key in keys:
        root = child(root, key)
    return root


def put(root: Any, keys: Keys, value: Any) -> Any:
    """Set the member at ``keys`` under ``root`` to ``value``; the (new) root."""
    if not keys:
        return value
    parent, key = module_at(root, keys[:-1]), keys[-1]
    if isinstance(parent, nnx.List):
        parent[int(key)] = value
    elif isinstance(parent, nnx.Dict):
        parent[key] = value
    else:
        setattr(parent, key, value)
    return root


class Constant(nnx.Variable):
    """A parameter training does not change (a block's ``trainable=False`` parameter):
    listed, saved and loaded like a parameter, left out of gradients."""


def variable(root: Any, ref: Ref) -> nnx.Variable | None:
    """The variable ``ref`` names under ``root`` (None if its layer has no such one yet)."""
    owner = module_at(root, ref.keys)
    value = getattr(owner, ref.attr, None)
    return value if isinstance(value, nnx.Variable) else None


def transposed(root: Any, ref: Ref, ndim: int, to_native: bool = False
               ) -> tuple[int, ...] | None:
    """Axes permutation from the stored variable to the canonical layout, or back (None:
    none). A ``flipped`` 2-D variable is stored transposed from its layout."""
    if ndim == 2 and ref.attr in getattr(module_at(root, ref.keys), "flipped", ()):
        return None if ref.layout == "dense" else (1, 0)
    return layout_perm(ref.layout, ndim, to_native)


# ---- describing an adopted module ------------------------------------------------------


def members(obj: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of a module's or container's members, in definition order."""
    if isinstance(obj, (list, tuple, nnx.List)):
        yield from ((str(i), v) for i, v in enumerate(obj))
    elif isinstance(obj, (dict, nnx.Dict)):
        yield from ((str(k), v) for k, v in obj.items())
    else:
        yield from ((k, v) for k, v in vars(obj).items() if not k.startswith("_"))


def _is_layer(value: Any) -> bool:
    if isinstance(value, (nnx.Rngs, nnx.RngStream)):
        return False
    if isinstance(value, nnx.Module):
        return True
    return isinstance(value, (list, tuple, dict)) and any(
        isinstance(v, nnx.Module) for v in (value.values() if isinstance(value, dict) else value))


#: variables that are not model state to save: rng streams, sown values, caches
_TRANSIENT = (nnx.RngState, nnx.Intermediate, nnx.Cache, nnx.Perturbation)


def is_parameter(value: Any) -> bool:
    """``nnx.Param``, ``nnx.BatchStat``, :class:`Constant`, and a custom ``nnx.Variable``
    type holding floating-point values (as ``nnx.state`` lists it: saved and loaded)."""
    if isinstance(value, (nnx.Param, nnx.BatchStat, Constant)):
        return True
    if not isinstance(value, nnx.Variable) or isinstance(value, _TRANSIENT):
        return False
    dtype = getattr(value.get_value(), "dtype", None)
    return dtype is not None and bool(jax.numpy.issubdtype(dtype, jax.numpy.floating))


def canonical(module: Any, attr: str, ndim: int
              ) -> tuple[str, str, tuple[str, ...] | None, str]:
    """(canonical local name, role, axes, layout) of ``module.<attr>``: the role and axes
    from :func:`unifparam.roles.classify`, by the module's family."""
    if isinstance(module, nnx.BatchNorm) and attr in ("mean", "var"):
        local = "running_mean" if attr == "mean" else "running_var"
    else:
        local = local_name(attr)
    family = _family(module, attr)
    role, axes = classify(family, local, ndim)
    return local, role, axes, layout_of(attr, family, axes)


def _family(module: Any, attr: str) -> str:
    if isinstance(module, nnx.Conv):
        return "conv"
    if isinstance(module, nnx.Linear):
        return "dense"
    if attr == "embedding":
        return "embedding"
    if attr == "scale":
        return "norm"
    return family_of(type(module).__name__)


def _text(module: Any, kind: str) -> str:
    if isinstance(module, nnx.Linear):
        return f"{kind}({module.in_features} -> {module.out_features})"
    if isinstance(module, nnx.Conv):
        return (f"{kind}({module.in_features} -> {module.out_features}, "
                f"kernel={tuple(module.kernel_size)})")
    if isinstance(module, nnx.Embed):
        return f"{kind}({module.num_embeddings}, {module.features})"
    if isinstance(module, (nnx.BatchNorm, nnx.LayerNorm)):
        return f"{kind}({module.num_features})"
    if isinstance(module, nnx.Dropout):
        return f"{kind}({module.rate})"
    return f"{kind}()"


def describe(module: Any) -> tuple[NativeLayer, dict[str, Keys]]:
    """The canonical tree of ``module`` (every use of a shared submodule is visited), and the
    attribute path of every canonical layer path."""
    paths: dict[str, Keys] = {}

    def visit(obj: Any, keys: Keys, path: str) -> NativeLayer:
        paths[path] = keys
        kind = type(obj).__name__
        layer = NativeLayer(path, kind, _text(obj, kind))
        for key, value in members(obj):
            if is_parameter(value):
                array = value.get_value()
                local, role, axes, layout = canonical(obj, key, array.ndim)
                if local in layer.params:  # two native names map to one: keep the native one
                    local, layout = key, "plain"
                layer.params[local] = NativeParam(
                    name=nn.join(path, local), ref=Ref(keys, key, layout),
                    shape=relayout(layout, tuple(array.shape)), role=role, axes=axes,
                    trainable=isinstance(value, nnx.Param), dtype=str(jax.numpy.dtype(array.dtype)),
                    native_name=".".join((*keys, key)), storage=id(value))
            elif _is_layer(value):
                if getattr(obj, "positional_children", False) and key == "layers":
                    for item, child in members(value):  # unifparam's own Sequential
                        layer.children.append(
                            (item, visit(child, (*keys, key, item), nn.join(path, item))))
                    continue
                layer.children.append((key, visit(value, (*keys, key), nn.join(path, key))))
        return layer

    return visit(module, (), ""), paths
