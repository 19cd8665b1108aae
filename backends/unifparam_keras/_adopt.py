"""Describe Keras layers in canonical terms: the layer tree, names, roles, axes, layouts.

One naming rule for every adopted Keras model (keras_hub backbones included), a path of
keys joined by dots, then the parameter's local name:

- the keys of a Sequential or functional model's layers are their positions in
  ``model.layers`` (InputLayer left out): ``0``, ``1``, ... (a keras_hub backbone is a
  functional model: ``4.self_attention.query.weight``);
- the keys of a subclassed layer's sublayers are the attribute names that hold them; a list
  or dict attribute is one more level keyed by index or dict key (``blocks.0``);
- the local name is canonical, as for every backend: ``weight`` (Keras's ``kernel``,
  ``embeddings``, ``gamma``), ``bias`` (``beta``), ``running_mean``, ``running_var``
  (:func:`unifparam.roles.local_name`); a variable of another name keeps its Keras name.

A layer used in two places is one storage, listed under its first name.

    >>> describe(keras.Sequential([keras.layers.Dense(4)])).children[0][1].params["weight"]
    ...                                                      # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import keras
from keras.src.models.functional import Functional
from keras.src.utils.naming import to_snake_case

from unifparam import NativeLayer, NativeParam, nn
from unifparam.backend import kernel_perm
from unifparam.roles import STATISTICS, classify, family_of, local_name


@dataclass(frozen=True, eq=False)
class Ref:
    """Where one parameter lives: ``layer.<attr>`` reads it, ``vars(layer)[store]`` owns it.

    ``perm`` takes the native array to canonical layout (``x.transpose(perm)``); None when
    the layouts agree. ``var`` pins a variable no attribute holds (unknown layer types).
    """

    layer: Any
    name: str             # canonical local name: weight, bias, running_mean, ...
    attr: str             # public attribute the layer's call reads: kernel, bias, gamma, ...
    store: str            # instance attribute holding the layer's own variable
    perm: tuple[int, ...] | None = None
    role: str = "weight"
    axes: tuple[str, ...] | None = None
    trainable: bool = True
    var: Any = None

    @property
    def native_perm(self) -> tuple[int, ...] | None:
        """The permutation taking a canonical array to this parameter's native layout."""
        return None if self.perm is None else kernel_perm(len(self.perm), to_native=True)

    def own(self) -> Any:
        """The layer's own variable, or None before the layer is built."""
        return self.var if self.var is not None else vars(self.layer).get(self.store)


def schema(layer: Any) -> list[Ref]:
    """Refs of every parameter a known Keras layer type has (or will have once built)."""
    L = keras.layers  # noqa: N806
    if hasattr(layer, "unifparam_refs"):  # a unifparam block's own parameters
        return layer.unifparam_refs()
    if isinstance(layer, L.Embedding):
        kind, ndim, attrs = "embedding", 1, {"weight": "embeddings"}
    elif isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)):
        kind, ndim = ("dense", 2) if isinstance(layer, L.Dense) else ("conv", layer.rank + 2)
        attrs = {"weight": "kernel", "bias": "bias" if layer.use_bias else None}
    elif isinstance(layer, (L.LayerNormalization, L.BatchNormalization)):
        kind, ndim = "norm", 1
        attrs = {"weight": "gamma" if layer.scale else None,
                 "bias": "beta" if layer.center else None}
        if isinstance(layer, L.BatchNormalization):
            attrs.update(running_mean="moving_mean", running_var="moving_variance")
    else:
        return _discovered(layer)
    refs = [_ref(layer, kind, name, attr, ndim if name == "weight" else 1)
            for name, attr in attrs.items() if attr is not None]
    # a subclass's own variables (ReversibleEmbedding's reverse_embeddings, made in build)
    known = {id(r.own()) for r in refs if r.own() is not None}
    return refs + _discovered(layer, known, {r.name for r in refs})


def _ref(layer: Any, kind: str, name: str, attr: str, ndim: int = 1) -> Ref:
    """A known layer's parameter: kernels (ndim >= 2) change layout, statistics are frozen.
    An attribute that is a property (Dense's ``kernel``) reads the variable in ``_<attr>``."""
    role, axes = classify(kind, name, ndim)
    perm = kernel_perm(ndim, to_native=False) if ndim >= 2 else None
    store = f"_{attr}" if isinstance(getattr(type(layer), attr, None), property) else attr
    return Ref(layer, name, attr, store, perm, role, axes, name not in STATISTICS)


def _discovered(layer: Any, skip: set[int] = frozenset(),  # type: ignore[assignment]
                taken: set[str] = frozenset()) -> list[Ref]:  # type: ignore[assignment]
    """Refs of a layer's own variables but those in ``skip`` (none before it is built):
    every variable a layer owns is listed, whoever created it and when."""
    owned = {id(v): k for k, v in vars(layer).items() if isinstance(v, keras.Variable)}
    refs: list[Ref] = []
    for v in [*layer._trainable_variables, *layer._non_trainable_variables]:
        if id(v) in skip:
            continue
        store = owned.get(id(v))
        attr = store.lstrip("_") if store and isinstance(
            getattr(type(layer), store.lstrip("_"), None), property) else store
        name = local_name(v.name)
        used = taken | {r.name for r in refs}
        name = name if name not in used else f"{v.name}_{len(refs) + len(taken)}"
        role, axes = classify(family_of(type(layer).__name__), name, len(v.shape))
        refs.append(Ref(layer, name, attr or name, store or name, None, role,
                        axes if axes is None or len(axes) < 2 else None, v.trainable,
                        None if store else v))
    return refs


def known_shape(ref: Ref) -> nn.Shape | None:
    """The canonical shape, with None where an unbuilt layer does not know its input size."""
    var = ref.own()
    if var is not None:
        shape = tuple(var.shape)
        return tuple(shape[i] for i in ref.perm) if ref.perm else shape
    layer = ref.layer
    if isinstance(layer, keras.layers.Embedding):
        return (layer.input_dim, layer.output_dim)
    out = getattr(layer, "units", getattr(layer, "filters", None))  # Dense, convolutions:
    if out is not None:  # a kernel (out, in, *kernel_size), a bias (out,)
        return (out, None, *getattr(layer, "kernel_size", ())) if ref.name == "weight" else (out,)
    return (None,) if ref.axes == ("out",) else None


def input_shape_for(layer: Any, name: str, shape: tuple[int, ...]) -> tuple[int | None, ...] | None:
    """An input shape that builds the unbuilt known ``layer`` so that its parameter
    ``name`` gets canonical ``shape`` (a checkpoint's), None if ``shape`` does not tell.

    >>> input_shape_for(keras.layers.Dense(4), "weight", (4, 5))   # doctest: +SKIP
    (None, 5)
    """
    L = keras.layers  # noqa: N806
    if isinstance(layer, L.Embedding):
        return (None, None)
    if isinstance(layer, L.Dense) and name == "weight":
        return (None, shape[1])
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) and name == "weight":
        space = (None,) * layer.rank
        return (None, *space, shape[1]) if layer.data_format == "channels_last" else \
            (None, shape[1], *space)
    if isinstance(layer, (L.LayerNormalization, L.BatchNormalization)) and \
            layer.axis in (-1, [-1]):
        return (None, shape[0])
    return None


def native_param(ref: Ref, name: str) -> NativeParam:
    """The NativeParam of ``ref`` under canonical ``name``."""
    var = ref.own()
    native = var.path if var is not None else f"{ref.layer.name}/{ref.store.lstrip('_')}"
    dtype = var.dtype if var is not None else keras.config.floatx()
    return NativeParam(name=name, ref=ref, shape=known_shape(ref), role=ref.role, axes=ref.axes,
                       trainable=ref.trainable, dtype=str(dtype), native_name=native,
                       storage=(id(ref.layer), ref.name))


def children(layer: Any) -> list[tuple[str, Any]]:
    """(key, sublayer or list of them): positions for Sequential and functional models,
    public attributes for subclassed ones (a list or dict attribute is a nested level)."""
    if isinstance(layer, (keras.Sequential, Functional)):
        kids = [x for x in layer.layers if not isinstance(x, keras.layers.InputLayer)]
        return [(str(i), x) for i, x in enumerate(kids)]
    if hasattr(layer, "positional_children"):  # unifparam's own Stack: every use, in order
        return [(str(i), x) for i, x in enumerate(layer.positional_children())]
    where: dict[int, tuple[str, str | None]] = {}  # id(sublayer) -> (attribute, item key)
    attrs = {**vars(layer).get("_modules", {}), **vars(layer)}  # torch-backed: in _modules
    for key, value in attrs.items():
        if key.startswith("_"):
            continue
        if isinstance(value, keras.layers.Layer):
            where.setdefault(id(value), (key, None))
        elif isinstance(value, (list, tuple, dict)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, x in items:
                if isinstance(x, keras.layers.Layer):
                    where.setdefault(id(x), (key, str(k)))
    private = {id(v): k.lstrip("_") for k, v in attrs.items()
               if k.startswith("_") and isinstance(v, keras.layers.Layer)}
    out: list[tuple[str, Any]] = []
    groups: dict[str, list[tuple[str, Any]]] = {}
    seen: dict[str, int] = {}
    for x in layer._layers:  # Keras's tracking order is the attribute assignment order
        key, item = where.get(id(x)) or (_stable_name(x, private, seen), None)
        if item is None:
            out.append((key, x))
        else:
            if key not in groups:
                groups[key] = []
                out.append((key, groups[key]))
            groups[key].append((item, x))
    return out


def _stable_name(x: Any, private: dict[int, str], seen: dict[str, int]) -> str:
    """The key of a sublayer no public attribute holds: its name when it was given one; when
    Keras numbered it (``mixtral_sparse_moe_block_10``, which depends on how many layers the
    process built before), the private attribute holding it, else its class's snake-case
    name numbered among its siblings, so names are stable across instances and processes."""
    base = to_snake_case(type(x).__name__)
    if not re.fullmatch(rf"{re.escape(base)}(_\d+)?", x.name):
        return x.name
    if id(x) in private:
        return private[id(x)]
    n = seen[base] = seen.get(base, -1) + 1
    return base if n == 0 else f"{base}_{n}"


def describe(layer: Any, path: str = "", table: dict[str, Any] | None = None) -> NativeLayer:
    """The canonical tree of ``layer``; ``table`` collects path -> Keras layer."""
    if table is not None:
        table.setdefault(path, layer)
    if isinstance(layer, list):  # a list or dict attribute of a subclassed layer
        node = NativeLayer(path, "list", f"[{len(layer)} layers]")
        kids = layer
    else:
        kind = type(layer).__name__
        node = NativeLayer(path, kind, f"{kind}(name={layer.name!r})")
        for ref in schema(layer):
            node.params[ref.name] = native_param(ref, nn.join(path, ref.name))
        kids = children(layer)
    for key, child in kids:
        node.children.append((key, describe(child, nn.join(path, key), table)))
    return node
