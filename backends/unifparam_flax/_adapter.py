"""The Flax (linen) backend: unifparam's primitives on ``(module, variables)`` states.

References to parameters are :class:`~unifparam_flax._state.Leaf` values (a pytree path
and a layout), so they stay valid across the new states every change makes. Shapes come
from the traced layer inputs (spec models) or ``jax.eval_shape(module.init, ...)``
(adopted models); nothing jits a whole model.

    >>> net = unifparam.build(nn.Sequential(nn.Dense(8)), backend="flax")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, traverse_util

from unifparam import Backend, NativeParam, Plan, Storage, nn
from unifparam.backend import (
    ABSTRACT,
    DEFERRED,
    MATERIALIZED,
    WRITE,
    canonical_shards,
    default_loss,
    native_order,
    native_shard_maker,
    numpy_input,
    to_layout,
)
from unifparam.errors import InputShapeError, UnknownNameError, UnsupportedError

from . import _devices
from ._adopt import describe, split_native
from ._layers import SPEC_PARAMS, convert, default_init, layout_perm, relayout
from ._state import FlaxState, LayerInfo, Leaf, Path, expand, tied_module


class FlaxBackend(_devices.JaxDevices, Backend):
    """Flax linen adapter: spec layers become linen modules; the handle owns the variables."""

    name = "flax"
    capabilities = frozenset({"adopt", "abstract", "transpose_tie", "gradients"})

    # ---- construction ---------------------------------------------------------------
    def build(self, spec: nn.Layer) -> tuple[FlaxState, dict[str, NativeParam]]:
        module = convert.build(spec)
        layers = _spec_layers(spec, module)
        natives: dict[str, NativeParam] = {}
        owners: dict[Path, Any] = {}
        known: dict[Leaf, tuple[int, ...]] = {}
        for path, info in layers.items():
            if info.prefix in owners or not info.leaves:
                continue  # containers, and second uses of a shared spec layer
            owners[info.prefix] = info.module
            decls = info.spec.param_decls()
            eager = all(None not in d.shape for d in decls) and not isinstance(
                info.spec, nn.Block)  # as torch's non-lazy layers; a block's are the core's
            for decl in decls:
                leaf = info.leaves[decl.name]
                name = nn.join(path, decl.name)
                natives[name] = NativeParam(
                    name=name, ref=leaf, shape=decl.shape, role=decl.role, axes=decl.axes,
                    trainable=decl.trainable, native_name="/".join(leaf.path), storage=leaf.path)
                if eager:
                    known[leaf] = decl.shape
        state = FlaxState(module, {}, layers=layers, owners=owners)
        return _allocate(_add_abstract(state, known), frozenset()), natives

    def adopt(self, native: Any) -> tuple[FlaxState, Any]:
        module, variables = split_native(native)
        tree, layers, owners = describe(module, variables)
        leaves = {p: (jnp.asarray(v) if isinstance(v, np.ndarray) else v)
                  for p, v in traverse_util.flatten_dict(variables or {}).items()}
        return FlaxState(module, leaves, layers=layers, owners=owners), tree

    # ---- size and storage ------------------------------------------------------------
    def infer(self, native: FlaxState, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Any]) -> FlaxState:
        """Adopted modules: abstract leaves from ``jax.eval_shape(module.init, ...)``."""
        if inputs is not None:
            example = tuple(jax.ShapeDtypeStruct(np.shape(x), as_array(x).dtype) for x in inputs)
        else:
            example = tuple(jax.ShapeDtypeStruct(tuple(s), jnp.float32) for s in input_shapes)
        shapes = jax.eval_shape(lambda *xs: _init_vars(native.module, jax.random.PRNGKey(0),
                                                       xs), *example)
        flat = traverse_util.flatten_dict(shapes)
        missing = {p: v for p, v in flat.items() if p not in native.leaves and p not in native.ties}
        return native.with_leaves(missing).replace(example=example)

    def allocate(self, native: FlaxState, plan: Plan) -> FlaxState:
        """Planned leaves get their shapes (placeholders), then memory unless abstract:
        flax's default initializers fill every leaf the core does not write next."""
        st = _add_abstract(native, {s.ref: s.shape for s in plan.storages.values()
                                    if s.ref.path not in native.leaves
                                    and s.ref.path not in native.ties})
        shardings = {} if plan.mesh is None else {
            s.ref.path: _sharding(plan.mesh, s) for s in plan.storages.values()
            if s.shard is not None and s.ref.path in st.leaves}
        if shardings:  # placeholders carry their placement (abstract models show it)
            st = st.with_leaves({p: jax.ShapeDtypeStruct(st.leaves[p].shape,
                                                         st.leaves[p].dtype, sharding=sh)
                                 for p, sh in shardings.items()
                                 if isinstance(st.leaves[p], jax.ShapeDtypeStruct)})
        if plan.device is not None:  # so do those of a model placed on one device
            st = st.with_leaves({s.ref.path: _devices.placed(st.leaves[s.ref.path], plan.device)
                                 for s in plan.storages.values() if s.ref.path in st.leaves})
        if plan.abstract:
            return st
        return _allocate(st, frozenset(s.ref.path for s in plan.storages.values()
                                       if s.fill == WRITE),
                         {s.ref.path: s for s in plan.storages.values() if s.fallback})

    def owned_blocks(self, native: FlaxState, ref: Leaf) -> list[tuple[tuple[slice, ...], Any]]:
        """The first replica of each shard on this process's devices, canonical."""
        value = native.value(ref.path)
        return canonical_shards(value.addressable_shards, layout_perm(ref.layout, value.ndim, True))

    def mesh_axes(self, mesh: Any) -> dict[str, int]:
        return jax_mesh_axes(self.configuration, mesh)

    def write_sharded(self, native: FlaxState, storage: Storage, mesh: Any,
                      block: Callable[[tuple[slice, ...]], np.ndarray]) -> FlaxState:
        """Each addressable device's shard is made alone (its canonical block, transposed
        to flax's layout) and placed on it: no device holds another's values."""
        leaf = native.leaves[storage.ref.path]
        perm = layout_perm(storage.ref.layout, leaf.ndim, True)
        make = native_shard_maker(block, perm, leaf.dtype)
        new = jax.make_array_from_callback(tuple(leaf.shape), _sharding(mesh, storage), make)
        return native.with_leaves({storage.ref.path: new})

    def status(self, native: FlaxState, ref: Leaf) -> tuple[tuple[int | None, ...] | None, str]:
        try:
            value = native.value(ref.path)
        except KeyError:  # not there yet, or a tie whose root is not there yet
            return None, DEFERRED
        shape = relayout(ref.layout, tuple(value.shape))
        return shape, (ABSTRACT if isinstance(value, jax.ShapeDtypeStruct) else MATERIALIZED)

    def read(self, native: FlaxState, ref: Leaf) -> np.ndarray:
        return relayout(ref.layout, np.asarray(native.value(ref.path)))

    def write(self, native: FlaxState, ref: Leaf, value: np.ndarray) -> FlaxState:
        path, layout, value = ref.path, ref.layout, np.asarray(value)
        while path in native.ties:  # writing a tied use writes its root
            src, _, transpose = native.ties[path]
            value = value.T if transpose else value
            path, layout = src.path, src.layout
        old = native.leaves[path]
        return native.with_leaves({path: _put(layout, value, old.dtype, _devices.placement(old))})

    def alias(self, native: FlaxState, src: Leaf, dst: Leaf, transpose: bool) -> FlaxState:
        if src.path == dst.path or native.ties.get(dst.path) == (src, dst, transpose):
            return native
        ties = {**native.ties, dst.path: (src, dst, transpose)}
        return native.replace(ties=ties).with_leaves({}, drop=(dst.path,))

    def reset(self, native: FlaxState, refs: Sequence[Leaf]) -> FlaxState:
        paths = [r.path for r in refs if r.path in native.leaves]
        abstract = {p: jax.ShapeDtypeStruct(native.leaves[p].shape, native.leaves[p].dtype,
                                            sharding=_devices.placement(native.leaves[p]))
                    for p in paths}
        fresh = _allocate(native.with_leaves(abstract), frozenset())
        return native.with_leaves({p: fresh.leaves[p] for p in paths})

    def set_compute(self, native: FlaxState, dtype: str | None, mixed: bool) -> FlaxState:
        """Mixed precision as Flax's ``dtype=`` does it: parameters and inputs are cast
        to ``dtype`` for ``apply`` (gradients flow back to the stored dtype)."""
        return native.replace(compute=None if dtype is None else jnp.dtype(dtype))

    def dtype_of(self, native: FlaxState, ref: Leaf) -> Any:
        value = native.leaves.get(ref.path)
        return None if value is None else value.dtype

    def cast(self, native: FlaxState, ref: Leaf, dtype: str) -> FlaxState:
        value = native.leaves[ref.path]
        if isinstance(value, jax.ShapeDtypeStruct):
            new = jax.ShapeDtypeStruct(value.shape, jnp.dtype(dtype), sharding=value.sharding)
        else:
            new = value.astype(jnp.dtype(dtype))  # keeps its placement
        return native.with_leaves({ref.path: new})

    def native_object(self, native: FlaxState, ref: Leaf) -> Any:
        return native.value(ref.path) if ref.path in native.leaves or ref.path in native.ties \
            else None

    def native_layer(self, native: FlaxState, path: str) -> Any:
        """``(module, variables)``: for the root, ``module.apply(variables, x) == net(x)``."""
        if not path:
            return tied_module(native), native.variables(expanded=False)
        info = native.layers.get(path)
        if info is None:
            raise UnknownNameError(f"No layer {path!r} in this Flax model.")
        n = len(info.prefix)
        sub = {(p[0], *p[n + 1:]): v for p, v in traverse_util.flatten_dict(
            native.variables()).items() if p[1:n + 1] == info.prefix}
        return info.module, traverse_util.unflatten_dict(sub) if sub else {}

    # ---- devices -------------------------------------------------------------------
    def device_of(self, native: FlaxState, ref: Leaf) -> str | None:
        try:
            return _devices.where(native.value(ref.path))
        except KeyError:
            return None

    def move(self, native: FlaxState, device: str) -> FlaxState:
        """Every stored array on ``device`` (ties are expanded from their root at apply
        time, so they follow)."""
        return native.with_leaves({p: _devices.move(v, device) for p, v in native.leaves.items()})

    # ---- compute -------------------------------------------------------------------
    def run(self, native: FlaxState, inputs: Sequence[Any], training: bool
            ) -> tuple[Any, FlaxState]:
        """The output, and the state with updated ``batch_stats`` when ``training``."""
        device = _devices.model_device(native.leaves.values())
        xs = [_devices.as_input(x, device) for x in inputs]
        if not training:
            return _apply(native, native.leaves, xs, False), native
        out, updates = _apply(native, native.leaves, xs, True)
        flat = traverse_util.flatten_dict(dict(updates))
        return out, native.with_leaves({p: v for p, v in flat.items() if p in native.leaves})

    def gradients(self, native: FlaxState, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Leaf],
                  training: bool = False) -> Any:
        device = _devices.model_device(native.leaves.values())
        xs = [_devices.as_input(x, device) for x in inputs]
        wrt = {p: v for p, v in native.leaves.items() if p[0] == "params"}
        fixed = {p: v for p, v in native.leaves.items() if p[0] != "params"}

        def objective(trainable: dict[Path, Any]) -> Any:
            got = _apply(native, {**fixed, **trainable}, xs, training)
            out, updates = got if training else (got, {})
            return loss_of(out, loss), updates

        grads, updates = jax.grad(objective, has_aux=True)(wrt)
        out = {}
        for name, ref in refs.items():
            g = grads.get(ref.path)
            g = np.zeros(native.leaves[ref.path].shape, np.float32) if g is None else np.asarray(g)
            out[name] = np.asarray(relayout(ref.layout, g), order="C")  # 0-d stays 0-d
        if not training:
            return out
        flat = traverse_util.flatten_dict(dict(updates))  # batch_stats, as run() keeps them
        return out, native.with_leaves({p: v for p, v in flat.items() if p in native.leaves})


# ---- helpers ------------------------------------------------------------------------------
def _spec_layers(spec: nn.Layer, module: linen.Module) -> dict[str, LayerInfo]:
    """Canonical path -> LayerInfo, with scope paths read from the bound module itself."""
    out: dict[str, LayerInfo] = {}

    def visit(layer: nn.Layer, bound: Any, unbound: Any, path: str) -> None:
        prefix = tuple(bound.scope.path)
        decls = {d.name for d in layer.param_decls()}
        leaves = {local: Leaf((col, *prefix, leaf), layout)
                  for local, (col, leaf, layout) in SPEC_PARAMS.get(layer.kind, {}).items()
                  if local in decls}
        if isinstance(layer, nn.Block):  # its own parameters, canonical layout
            leaves = {local: Leaf(("params", *prefix, local), "plain") for local in decls}
        out[path] = LayerInfo(unbound, prefix, layer, leaves)
        kids = layer.children()
        if kids:
            for (key, child), b, u in zip(kids, bound.layers, unbound.layers):
                visit(child, b, u, nn.join(path, key))

    visit(spec, module.bind({}), module, "")
    return out


def _add_abstract(st: FlaxState, shapes: Mapping[Leaf, tuple[int, ...]]) -> FlaxState:
    """``st`` with a placeholder (shape, no memory) for each leaf given a canonical shape."""
    return st.with_leaves({leaf.path: jax.ShapeDtypeStruct(relayout(leaf.layout, tuple(s), True),
                                                           jnp.float32)
                           for leaf, s in shapes.items()})


def jax_mesh_axes(configuration: str, mesh: Any) -> dict[str, int]:
    """The axis names and sizes of a ``jax.sharding.Mesh`` (linen and NNX shard over one)."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise UnsupportedError(f"The {configuration} backend shards over a jax.sharding.Mesh, "
                               f"got {type(mesh).__name__}: jax.make_mesh((2, 4), "
                               f"('data', 'model')).")
    return {str(k): int(v) for k, v in mesh.shape.items()}


def named_sharding(mesh: Any, storage: Storage, to_native: Sequence[int] | None) -> Any:
    """The NamedSharding of a planned storage: its canonical placement in native order."""
    spec = native_order(storage.shard or (None,) * len(storage.shape), to_native)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def _sharding(mesh: Any, storage: Storage) -> Any:
    return named_sharding(mesh, storage, layout_perm(storage.ref.layout, len(storage.shape),
                                                     True))


def _allocate(st: FlaxState, skip: frozenset[Path],
              fallbacks: Mapping[Path, Storage] | None = None) -> FlaxState:
    """Give every abstract leaf memory, filled by flax's own default initializer.

    Leaves in ``skip`` stay placeholders: the core writes them next, and ``write`` makes
    the array from its buffer, so their memory is allocated once. A leaf whose initializer
    only ``module.init`` knows, with no example input to run it, gets the plan's fallback.
    """
    todo = [p for p, v in st.leaves.items()
            if isinstance(v, jax.ShapeDtypeStruct) and p not in skip]
    if not todo:
        return st
    key = jax.random.PRNGKey(secrets.randbits(31))
    new: dict[Path, Any] = {}
    unknown: list[Path] = []
    for i, path in enumerate(todo):
        spec = st.leaves[path]
        fn = default_init(st.owners.get(path[1:-1]), path[0], path[-1])
        if fn is None:
            unknown.append(path)
        elif getattr(spec, "sharding", None) is not None:  # each device makes its shard
            make = jax.jit(lambda k, fn=fn, spec=spec: fn(k, spec.shape, spec.dtype),
                           out_shardings=spec.sharding)
            new[path] = make(jax.random.fold_in(key, i))
        else:
            new[path] = jnp.asarray(fn(jax.random.fold_in(key, i), spec.shape, spec.dtype))
    fallbacks = fallbacks or {}
    if unknown and st.example is None and all(p in fallbacks for p in unknown):
        for path in unknown:
            new[path] = _put(fallbacks[path].ref.layout, fallbacks[path].fallback(),
                             st.leaves[path].dtype, _devices.placement(st.leaves[path]))
    elif unknown:
        new.update({p: jax.device_put(v, _devices.placement(st.leaves[p]))
                    for p, v in _init_by_module(st, unknown, key).items()})
    return st.with_leaves(new)


def _put(layout: str, value: Any, dtype: Any, sharding: Any = None) -> Any:
    """A canonical value as a jax array in ``layout`` (placed by ``sharding``, if given):
    made once, aligned, so jax adopts the buffer without a copy."""
    value = np.asarray(value)
    return jax.device_put(to_layout(value, layout_perm(layout, value.ndim, True), dtype),
                          sharding)


def _init_by_module(st: FlaxState, paths: list[Path], key: Any) -> dict[Path, Any]:
    """Leaves whose initializer only the module knows: run ``module.init`` (no jit)."""
    if st.example is None:
        raise InputShapeError(
            f"Flax parameters {', '.join('/'.join(p) for p in paths[:3])} have shapes but no "
            f"known initializer: pass example inputs, unifparam.materialize(net, X).")
    xs = [jnp.zeros(s.shape, s.dtype) for s in st.example]
    full = traverse_util.flatten_dict(_init_vars(st.module, key, xs))
    return {p: full[p] for p in paths}


def _init_vars(module: linen.Module, key: Any, xs: Sequence[Any]) -> Any:
    k1, k2 = jax.random.split(key)
    return module.init({"params": k1, "dropout": k2}, *xs, **mode_kwargs(module, False))


def _apply(st: FlaxState, leaves: Mapping[Path, Any], xs: Sequence[Any], training: bool) -> Any:
    if st.compute is not None:  # a mixed policy: the maths in its compute dtype
        leaves = {p: _compute(v, st.compute) if p[0] == "params" else v
                  for p, v in leaves.items()}
        xs = [_compute(x, st.compute) for x in xs]
    variables = expand(leaves, st.ties)
    kwargs = mode_kwargs(st.module, training)
    if not training:
        return st.module.apply(variables, *xs, **kwargs)
    rngs = {"dropout": jax.random.PRNGKey(secrets.randbits(31))}
    mutable = [c for c in variables if c != "params"]
    return st.module.apply(variables, *xs, rngs=rngs, mutable=mutable, **kwargs)


def _compute(x: Any, dtype: Any) -> Any:
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x


#: How Flax code spells the mode in ``__call__`` (Flax's BatchNorm and Dropout guides):
#: argument -> its value in training.
MODE_ARGS = {"training": True, "train": True, "is_training": True, "deterministic": False,
             "use_running_average": False}


def mode_kwargs(module: linen.Module, training: bool) -> dict[str, bool]:
    """``net(x, training=...)`` as the keywords ``module.__call__`` takes, always given
    (a ``train: bool = True`` default must not decide evaluation)."""
    try:
        accepted = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {arg: training == when_training for arg, when_training in MODE_ARGS.items()
            if arg in accepted}


def as_array(x: Any) -> Any:
    """A model input as a jax array (floats float32, integers int32)."""
    return x if isinstance(x, jax.Array) else jnp.asarray(numpy_input(x, "int32"))


def loss_of(out: Any, loss: Callable[[Any], Any] | None) -> Any:
    """``loss(out)``, or the core's default loss (the sum of the floating outputs)."""
    if loss is not None:
        return loss(out)
    return default_loss(out, jnp.sum, lambda x: jnp.issubdtype(x.dtype, jnp.floating))
