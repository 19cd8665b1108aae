"""Describe a user's linen module in canonical terms: layer tree, names, roles, axes, shapes.

Children come from the module's attributes (``setup`` and dataclass fields; a
``Sequential``'s ``layers_<i>`` becomes ``"<i>"``) and, for ``@nn.compact`` submodules, from
the variables pytree (``Dense_0`` stays ``Dense_0``). Native names are pytree paths joined
by ``/``; a module instance used twice has one scope path, hence one storage.

    >>> tree, layers, owners = describe(linen.Sequential([linen.Dense(8), linen.Dense(1)]), None)
    >>> [k for k, _ in tree.children]
    ['0', '1']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flax import linen, traverse_util

from unifparam import NativeLayer, NativeParam, nn
from unifparam.errors import UnsupportedError
from unifparam.roles import classify, family_of, local_name

from ._layers import layout_of, relayout
from ._state import LayerInfo, Leaf, Path

_KNOWN = (linen.Dense, linen.Conv, linen.ConvTranspose, linen.Embed, linen.LayerNorm,
          linen.BatchNorm)


def split_native(native: Any) -> tuple[linen.Module, dict[str, Any] | None]:
    """``module``, ``(module, variables)`` or a bound module -> ``(module, variables or None)``."""
    if isinstance(native, tuple):
        if len(native) != 2 or not isinstance(native[0], linen.Module):
            raise TypeError(f"Expected a Flax module or a (module, variables) pair, got a tuple "
                            f"of {len(native)} items. Pass build((module, variables)).")
        module, variables = native
    else:
        module, variables = native, None
    if getattr(module, "scope", None) is not None:  # a bound module carries its variables
        module, variables = module.unbind()
    if variables is not None:
        variables = traverse_util.unflatten_dict(traverse_util.flatten_dict(variables))
    return module, (variables or None)


def describe(module: linen.Module, variables: Mapping[str, Any] | None
             ) -> tuple[NativeLayer, dict[str, LayerInfo], dict[Path, Any]]:
    """The canonical tree of ``module``; also canonical path -> LayerInfo, scope -> module."""
    flat = traverse_util.flatten_dict(variables) if variables else {}
    layers: dict[str, LayerInfo] = {}
    owners: dict[Path, Any] = {}

    def visit(m: Any, prefix: Path, path: str, name: str) -> NativeLayer:
        kind = type(m).__name__ if m is not None else re.sub(r"_\d+$", "", name) or "Module"
        layer = NativeLayer(path, kind, _text(m, kind))
        if m is not None:
            owners.setdefault(prefix, m)
        params = _own_leaves(m, prefix, flat, predict=not flat)
        for local, (leaf, shape, role, axes, trainable, dtype) in params.items():
            layer.params[local] = NativeParam(nn.join(path, local), leaf, shape, role, axes,
                                              trainable, dtype, "/".join(leaf.path),
                                              storage=leaf.path)
        layers[path] = LayerInfo(_unbound(m), prefix, None, {k: v[0] for k, v in params.items()})
        covered: set[str] = set()
        kids = _attr_children(m, path)
        if not flat and not kids and not isinstance(m, _KNOWN) and _is_compact(m):
            raise UnsupportedError(
                f"Flax module '{path or kind}' ({kind}) creates its layers inside an "
                f"@nn.compact __call__, so they are unknown before init. Pass "
                f"build((module, module.init(key, x))), or abstract variables "
                f"build((module, jax.eval_shape(module.init, key, x))).")
        for key, child in kids:
            cprefix = tuple(child.scope.path)
            covered.add(cprefix[-1])
            layer.children.append((key, visit(child, cprefix, nn.join(path, key), cprefix[-1])))
        for sub in _pytree_children(flat, prefix):
            if sub not in covered:
                layer.children.append((sub, visit(None, (*prefix, sub), nn.join(path, sub), sub)))
        return layer

    root = module.bind(variables or {})
    return visit(root, (), "", ""), layers, owners


def _unbound(m: Any) -> Any:
    try:
        return m.unbind()[0] if m is not None else None
    except Exception:  # noqa: BLE001 - a module flax cannot unbind is still usable as is
        return m


def _text(m: Any, kind: str) -> str:
    fields = ("features", "kernel_size", "num_embeddings", "strides", "rate")
    args = [f"{f}={getattr(m, f)!r}" for f in fields if m is not None and hasattr(m, f)]
    return f"{kind}({', '.join(args)})"


def _attr_children(m: Any, path: str) -> list[tuple[str, Any]]:
    """Bound submodules assigned as attributes (dataclass fields or in ``setup``), in order."""
    if m is None:
        return []
    try:
        m._try_setup()  # flax runs setup lazily; the children exist only afterwards
    except Exception as e:  # noqa: BLE001 - setup needing rngs or inputs
        raise UnsupportedError(
            f"Cannot list the layers of Flax module '{path or type(m).__name__}' without its "
            f"variables: its setup() failed ({type(e).__name__}: {e}). Pass "
            f"build((module, module.init(key, x))) or abstract variables "
            f"build((module, jax.eval_shape(module.init, key, x)))." ) from None
    out: list[tuple[str, Any]] = []
    for attr, value in vars(m).items():
        if attr.startswith("_") or attr in ("parent", "name", "scope"):
            continue
        if isinstance(value, linen.Module):
            out.append((attr, value))
        elif isinstance(value, (list, tuple)):
            seq = isinstance(m, linen.Sequential) or (attr == "layers"
                                                      and type(m).__name__ == "Sequential")
            out.extend(((str(i) if seq else f"{attr}_{i}"), v) for i, v in enumerate(value)
                       if isinstance(v, linen.Module))
        elif isinstance(value, Mapping):
            out.extend((f"{attr}_{k}", v) for k, v in value.items() if isinstance(v, linen.Module))
    return [(k, v) for k, v in out if getattr(v, "scope", None) is not None]


def _is_compact(m: Any) -> bool:
    return m is not None and bool(getattr(type(m).__call__, "compact", False))


def _pytree_children(flat: Mapping[Path, Any], prefix: Path) -> list[str]:
    n = len(prefix)
    paths = sorted(flat, key=lambda p: p[0] != "params")  # stable: params first, then stats
    subs = [p[1 + n] for p in paths if len(p) > n + 2 and p[1:1 + n] == prefix]
    return list(dict.fromkeys(subs))


ParamInfo = tuple[Leaf, Any, str, Any, bool, str]
_RANK = {"kernel": 0, "embedding": 0, "scale": 0, "bias": 1, "mean": 2, "var": 3}


def _own_leaves(m: Any, prefix: Path, flat: Mapping[Path, Any], predict: bool
                ) -> dict[str, ParamInfo]:
    """This module's own parameters: from the variables, or predicted from its attributes."""
    n = len(prefix)
    if not predict:
        found = [(p[0], p[-1], tuple(v.shape), str(v.dtype)) for p, v in flat.items()
                 if len(p) == n + 2 and p[1:1 + n] == prefix]
    elif isinstance(m, _KNOWN):
        found = _predicted(m)
    else:
        found = []
    found.sort(key=lambda f: (f[0] != "params", _RANK.get(f[1], len(_RANK))))
    leaves = {leaf for _, leaf, _, _ in found}
    out: dict[str, ParamInfo] = {}
    for col, leaf, shape, dtype in found:
        local, role, axes, layout = _canonical(m, col, leaf, len(shape), "scale" in leaves,
                                               prefix[-1] if prefix else "")
        if local in out:
            local = f"{col}_{leaf}"
        out[local] = (Leaf((col, *prefix, leaf), layout), relayout(layout, tuple(shape)), role,
                      axes, col == "params", dtype)
    return out


def _predicted(m: Any) -> list[tuple[str, str, tuple[Any, ...], str]]:
    """Native leaves of a known flax layer before init (``None`` for unknown input sizes)."""
    f32 = "float32"
    if isinstance(m, linen.Embed):
        return [("params", "embedding", (m.num_embeddings, m.features), f32)]
    if isinstance(m, (linen.Dense, linen.Conv, linen.ConvTranspose)):
        ks = getattr(m, "kernel_size", None)
        ks = () if ks is None else ((ks,) if isinstance(ks, int) else tuple(ks))
        out = [("params", "kernel", (*ks, None, m.features), f32)]
        return out + ([("params", "bias", (m.features,), f32)] if m.use_bias else [])
    out = [("params", leaf, (None,), f32) for leaf in ("scale", "bias")
           if getattr(m, f"use_{leaf}")]  # a norm's use_scale, use_bias
    if isinstance(m, linen.BatchNorm):
        out += [("batch_stats", "mean", (None,), f32), ("batch_stats", "var", (None,), f32)]
    return out


def _canonical(m: Any, col: str, leaf: str, ndim: int, has_scale: bool, scope: str = ""
               ) -> tuple[str, str, tuple[str, ...] | None, str]:
    """(canonical local name, role, logical axes, layout) of one native leaf; ``scope`` is
    the module's name in the pytree (``Conv_0``), all that is known of an unbound one."""
    if col == "batch_stats" and leaf in ("mean", "var"):
        local = "running_mean" if leaf == "mean" else "running_var"
        return (local, *classify("norm", local, 1), "plain")
    if col != "params":
        return f"{col}_{leaf}", "weight", None, "plain"
    kind = _family(m, leaf, ndim, has_scale, scope)
    local = local_name(leaf)
    role, axes = classify(kind, local, ndim)
    return local, role, axes, layout_of(leaf, kind, axes)


def _family(m: Any, leaf: str, ndim: int, has_scale: bool, scope: str = "") -> str:
    if isinstance(m, (linen.Conv, linen.ConvTranspose)):
        return "conv" if isinstance(m, linen.Conv) else "other"
    if isinstance(m, linen.Dense) or leaf == "kernel" and m is None and ndim == 2:
        return "dense"
    if leaf == "embedding":
        return "embedding"
    if leaf == "scale" or leaf == "bias" and has_scale:
        return "norm"
    # an unbound module is known by its pytree name only: a 3-D kernel may be a Conv's or
    # a DenseGeneral's (attention's "query"), so only a name saying Conv reads as one
    return family_of(type(m).__name__ if m is not None else re.sub(r"_\d+$", "", scope))
