"""The Flax NNX backend (``flax:nnx``): unifparam's primitives on live ``nnx.Module`` trees.

NNX modules are mutable Python objects holding ``nnx.Variable`` s, so the native state is
one :class:`NNXModel` holder changed in place. A spec layer whose input size is unknown is a
placeholder until :meth:`NNXBackend.allocate` builds it from its traced input shape, with
``nnx.eval_shape`` (abstract: shapes, no memory); memory and flax's default values come
after, variable by variable. Ties share one ``nnx.Variable`` object between layers, as NNX
does for a submodule used twice. Gradients are ``jax.grad`` over ``nnx.split`` state. A
custom block is an ``nnx.Module`` named like the block (``_nnx_blocks``); canonical layer
paths map to attribute paths once, at build (``NNXModel.paths``).

    >>> net = unifparam.build(nn.Sequential(nn.Dense(8)), backend="flax:nnx")  # doctest: +SKIP
    >>> net.native                      # the live nnx module                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unifparam import Backend, NativeLayer, NativeParam, Plan, Storage, nn
from unifparam.backend import (
    ABSTRACT,
    DEFAULT,
    DEFERRED,
    MATERIALIZED,
    canonical_shards,
    native_shard_maker,
    to_layout,
)
from unifparam.errors import UnknownNameError, UnsupportedError

from . import _devices
from . import _nnx_layers as layers
from ._adapter import jax_mesh_axes, loss_of, named_sharding
from ._layers import SPEC_PARAMS, permute
from ._nnx_adopt import Ref, describe, is_parameter, module_at, put, transposed, variable
from ._nnx_blocks import declare


@dataclass
class NNXModel:
    """The native state: the live root module and how canonical paths reach its layers."""

    module: Any
    spec: nn.Layer | None = None
    specs: dict[str, nn.Layer] = field(default_factory=dict)   # spec models: path -> layer
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # path -> attribute keys
    views: dict[Ref, Ref] = field(default_factory=dict)  # flipped ties of native layers
    compute: Any = None  # a mixed policy's compute dtype (set_compute)


class NNXBackend(_devices.JaxDevices, Backend):
    """Flax NNX adapter: spec layers become ``nnx`` modules; native models are adopted as is."""

    name = "flax:nnx"
    capabilities = frozenset({"adopt", "abstract", "transpose_tie", "gradients"})

    # ---- describe -------------------------------------------------------------------
    def build(self, spec: nn.Layer) -> tuple[NNXModel, dict[str, NativeParam]]:
        module = layers.convert.build(spec)
        holder = NNXModel(module, spec, dict(nn.uses(spec)), layers.paths_of(spec, module))
        natives: dict[str, NativeParam] = {}
        for path, layer in nn.first_uses(spec):
            where = SPEC_PARAMS.get(layer.kind, {})  # linen's leaf names are NNX's attributes
            for decl in layer.param_decls():
                # a block's own parameters: attributes of its name, canonical layout
                attr, layout = (decl.name, "plain") if isinstance(layer, nn.Block) else \
                    where[decl.name][1:]
                name = nn.join(path, decl.name)
                keys = holder.paths[path]
                natives[name] = NativeParam(
                    name=name, ref=Ref(keys, attr, layout), shape=decl.shape, role=decl.role,
                    axes=decl.axes, trainable=decl.trainable,
                    native_name=".".join((*keys, attr)))
        return holder, natives

    def adopt(self, native: Any) -> tuple[NNXModel, NativeLayer]:
        if not isinstance(native, nnx.Module):
            raise UnsupportedError(f"The flax:nnx backend adopts flax.nnx.Module models, got "
                                   f"{type(native).__name__}.")
        tree, paths = describe(native)
        return NNXModel(native, paths=paths), tree

    def structure(self, native: NNXModel) -> tuple[str, ...] | None:
        """Adopted modules: every parameter's canonical name (a submodule assigned after
        ``build`` changes it); None for spec-built models, which only unifparam changes,
        and once a transposed tie is made (its view would not survive a new listing)."""
        if native.spec is not None or native.specs or native.views:
            return None
        names: list[str] = []
        stack = [describe(native.module)[0]]
        while stack:
            layer = stack.pop()
            names += [p.name for p in layer.params.values()]
            stack += [child for _, child in layer.children]
        return tuple(names)

    def infer(self, native: NNXModel, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Any]) -> NNXModel:
        """NNX modules know every shape when constructed: nothing to infer."""
        return native

    # ---- store ----------------------------------------------------------------------
    def allocate(self, native: NNXModel, plan: Plan) -> NNXModel:
        """Build placeholder layers abstractly from their input shapes, and blocks' own
        parameters from their planned shapes; then (unless abstract) fill ``DEFAULT``
        storages with flax's own initializers (a block's own parameter: the plan's
        fallback). ``WRITE`` storages stay abstract: ``write`` gives them the core's buffer."""
        for path, shape in plan.layer_inputs.items():
            spec = native.specs.get(path)
            if spec is None or not isinstance(module_at(native.module, native.paths[path]),
                                              layers.Pending):
                continue
            new = nnx.eval_shape(lambda s=spec, x=shape: layers.make(s, tuple(x), nnx.Rngs(0)))
            for use, layer in native.specs.items():
                if layer is spec:  # every use of a shared layer
                    native.module = put(native.module, native.paths[use], new)
        own = {name for name, storage in plan.storages.items()
               if declare(native.module, storage)}
        placed = {name: self._sharding(native, storage, plan.mesh)
                  for name, storage in plan.storages.items()
                  if plan.mesh is not None and storage.shard is not None}
        if plan.device is not None:  # one device: every storage is placed there
            placed = dict.fromkeys(plan.storages, _devices.sharding(plan.device))
        for name, sharding in placed.items():  # placeholders carry their placement
            var = variable(native.module, plan.storages[name].ref)
            if var is not None and _abstract(var):
                value = var.get_value()
                var.set_value(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding))
        if plan.abstract:
            return native
        key = jax.random.key(secrets.randbits(31))
        on_device = _devices.default_scope(plan.device)  # flax's defaults run there
        with on_device:
            for i, (name, storage) in enumerate(plan.storages.items()):
                var = variable(native.module, storage.ref)
                if storage.fill != DEFAULT or var is None or not _abstract(var):
                    continue
                value = var.get_value()
                if name in own:
                    fresh = jnp.asarray(storage.fallback() if storage.fallback is not None else
                                        np.zeros(value.shape, value.dtype), value.dtype)
                else:
                    fresh = default_value(native.module, storage.ref, jax.random.fold_in(key, i))
                var.set_value(fresh if name not in placed else jax.device_put(fresh,
                                                                              placed[name]))
            _fill_state(native.module)
        if plan.device is not None:  # rng keys and counters go along
            self.move(native, plan.device)
        return native

    def mesh_axes(self, mesh: Any) -> dict[str, int]:
        return jax_mesh_axes(self.configuration, mesh)

    def write_sharded(self, native: NNXModel, storage: Storage, mesh: Any,
                      block: Callable[[tuple[slice, ...]], np.ndarray]) -> NNXModel:
        """Each addressable device's shard is made alone (its canonical block in the
        variable's layout) and placed on it: no device holds another's values."""
        var = variable(native.module, storage.ref)
        old = var.get_value()  # type: ignore[union-attr]
        perm = transposed(native.module, storage.ref, len(old.shape), True)
        var.set_value(jax.make_array_from_callback(  # type: ignore[union-attr]
            tuple(old.shape), self._sharding(native, storage, mesh),
            native_shard_maker(block, perm, old.dtype)))
        if storage.ref in native.views.values():
            _sync(native.module, native.views)
        return native

    def owned_blocks(self, native: NNXModel, ref: Ref) -> list[tuple[tuple[slice, ...], Any]]:
        """The first replica of each shard on this process's devices, canonical."""
        value = variable(native.module, ref).get_value()  # type: ignore[union-attr]
        return canonical_shards(value.addressable_shards,
                                transposed(native.module, ref, value.ndim, True))

    @staticmethod
    def _sharding(native: NNXModel, storage: Storage, mesh: Any) -> Any:
        perm = transposed(native.module, storage.ref, len(storage.shape), True)
        return named_sharding(mesh, storage, perm)

    def status(self, native: NNXModel, ref: Ref) -> tuple[tuple[int | None, ...] | None, str]:
        var = variable(native.module, ref)
        if var is None:
            return None, DEFERRED
        value = var.get_value()
        shape = permute(tuple(value.shape), transposed(native.module, ref, len(value.shape)))
        return shape, (ABSTRACT if isinstance(value, jax.ShapeDtypeStruct) else MATERIALIZED)

    def read(self, native: NNXModel, ref: Ref) -> np.ndarray:
        value = np.asarray(variable(native.module, ref).get_value())  # type: ignore[union-attr]
        return permute(value, transposed(native.module, ref, value.ndim))

    def write(self, native: NNXModel, ref: Ref, value: np.ndarray) -> NNXModel:
        var = variable(native.module, ref)
        old = var.get_value()  # type: ignore[union-attr]
        buffer = to_layout(value, transposed(native.module, ref, value.ndim, True), old.dtype)
        var.set_value(jax.device_put(buffer, _devices.placement(old)))  # type: ignore[union-attr]
        if ref in native.views.values():
            _sync(native.module, native.views)
        return native

    def alias(self, native: NNXModel, src: Ref, dst: Ref, transpose: bool) -> NNXModel:
        """Share ``src``'s variable object with ``dst``. A layer that must read it flipped
        (a transposed tie, or an embedding tied to a dense kernel) reads it flipped if it is
        a spec layer; a native layer gets its own variable computed from ``src`` before
        every run and inside every gradient (a view), so gradients still add up at ``src``."""
        source = variable(native.module, src)
        owner = module_at(native.module, dst.keys)
        ndim = len(source.get_value().shape)  # type: ignore[union-attr]
        flip = ndim == 2 and ((src.layout == "dense") != (dst.layout == "dense")) != transpose
        native.views.pop(dst, None)
        if flip and not isinstance(owner, layers.Flippable):
            if getattr(owner, dst.attr) is source:
                setattr(owner, dst.attr, type(source)(source.get_value().T))
            native.views[dst] = src
            _sync(native.module, {dst: src})
            return native
        if getattr(owner, dst.attr) is not source:
            setattr(owner, dst.attr, source)
        if isinstance(owner, layers.Flippable):
            flipped = tuple(a for a in owner.flipped if a != dst.attr)
            owner.flipped = (*flipped, dst.attr) if flip else flipped
        return native

    def reset(self, native: NNXModel, refs: Sequence[Ref]) -> NNXModel:
        key = jax.random.key(secrets.randbits(31))
        for i, ref in enumerate(refs):
            fresh = default_value(native.module, ref, jax.random.fold_in(key, i), keep=True)
            where = _devices.placement(variable(native.module, ref).get_value())  # type: ignore
            variable(native.module, ref).set_value(  # type: ignore[union-attr]
                fresh if where is None else jax.device_put(fresh, where))
        return native

    def set_compute(self, native: NNXModel, dtype: str | None, mixed: bool) -> NNXModel:
        """Mixed precision as NNX's ``dtype`` does it: every module with a ``dtype``
        computes in it (set before each run, so layers made later follow)."""
        native.compute = None if dtype is None else jnp.dtype(dtype)
        return native

    def dtype_of(self, native: NNXModel, ref: Ref) -> Any:
        var = variable(native.module, ref)
        return None if var is None else var.get_value().dtype

    def cast(self, native: NNXModel, ref: Ref, dtype: str) -> NNXModel:
        """The same Variable object (ties share it), holding its value in ``dtype``."""
        var = variable(native.module, ref)
        value = var.get_value()  # type: ignore[union-attr]
        if isinstance(value, jax.ShapeDtypeStruct):
            new = jax.ShapeDtypeStruct(value.shape, jnp.dtype(dtype), sharding=value.sharding)
        else:
            new = value.astype(jnp.dtype(dtype))
        var.set_value(new)  # type: ignore[union-attr]
        if native.views:
            _sync(native.module, native.views)
        return native

    def native_object(self, native: NNXModel, ref: Ref) -> Any:
        return variable(native.module, ref)

    def native_layer(self, native: NNXModel, path: str) -> Any:
        if not path:
            return native.module
        if path not in native.paths:
            raise UnknownNameError(f"No layer {path!r} in this NNX model.")
        return module_at(native.module, native.paths[path])

    # ---- devices --------------------------------------------------------------------
    def device_of(self, native: NNXModel, ref: Ref) -> str | None:
        var = variable(native.module, ref)
        return None if var is None else _devices.where(var.get_value())

    def move(self, native: NNXModel, device: str) -> NNXModel:
        """Every variable's array (rng keys and counters too) on ``device``, in place: tied
        layers share one variable object, so they follow."""
        for _, node in nnx.iter_graph(native.module):
            if isinstance(node, nnx.Variable):
                value = node.get_value()
                if isinstance(value, jax.Array):
                    node.set_value(_devices.move(value, device))
        return native

    # ---- run ------------------------------------------------------------------------
    def run(self, native: NNXModel, inputs: Sequence[Any], training: bool
            ) -> tuple[Any, NNXModel]:
        xs = [_devices.as_input(x, _model_device(native)) for x in inputs]
        _sync(native.module, native.views)
        with _mode(native, training):
            return _call(native, native.module, xs, training), native

    def gradients(self, native: NNXModel, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Ref],
                  training: bool = False) -> Any:
        """By ``nnx.grad``: what the forward changes (a custom ``nnx.Variable`` counter,
        batch statistics in training, dropout's rng counts) is kept, as NNX keeps it."""
        xs = [_devices.as_input(x, _model_device(native)) for x in inputs]
        with _mode(native, training):
            def objective(module: Any) -> Any:
                _sync(module, native.views)  # views follow their source inside the trace
                return loss_of(_call(native, module, xs, training), loss)

            state = nnx.grad(objective, argnums=nnx.DiffState(0, nnx.Param))(native.module)
            graphdef, _, rest = nnx.split(native.module, nnx.Param, ...)
            grads = nnx.merge(graphdef, state, rest)
        out = {}
        for name, ref in refs.items():
            g = np.asarray(variable(grads, ref).get_value())  # type: ignore[union-attr]
            out[name] = np.asarray(permute(g, transposed(grads, ref, g.ndim)), order="C")  # 0-d
        return (out, native) if training else out


# ---- helpers ------------------------------------------------------------------------------
def default_value(root: Any, ref: Ref, key: Any, keep: bool = False) -> Any:
    """Flax's own default value for the variable ``ref`` names: the default of the
    ``<attr>_init`` argument of its module's class's constructor (NNX modules do not keep the
    initializer they were given, so a custom one is not known), a batch norm's zero mean and
    unit variance. Unknown: the current value if ``keep`` (reset), else zeros."""
    module = module_at(root, ref.keys)
    value = variable(root, ref).get_value()  # type: ignore[union-attr]
    shape, dtype = tuple(value.shape), value.dtype
    if isinstance(module, nnx.BatchNorm) and ref.attr in ("mean", "var"):
        return (jnp.zeros if ref.attr == "mean" else jnp.ones)(shape, dtype)
    init = _class_default(type(module), f"{ref.attr}_init")
    if callable(init):
        return jnp.asarray(init(key, shape, dtype))
    return value if keep else jnp.zeros(shape, dtype)


@functools.cache
def _class_default(cls: type, arg: str) -> Any:
    """The default of constructor argument ``arg`` in the first class of ``cls``'s MRO that
    takes it (None if none does)."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            try:
                param = inspect.signature(klass.__init__).parameters.get(arg)
            except (TypeError, ValueError):
                continue
            if param is not None and param.default is not inspect.Parameter.empty:
                return param.default
    return None


def _sync(module: Any, views: Mapping[Ref, Ref]) -> None:
    """Set every view variable (tie target of a native layer) from its source: the source's
    canonical value, transposed, in the target's native layout."""
    for dst, src in views.items():
        value = variable(module, src).get_value()  # type: ignore[union-attr]
        target = variable(module, dst)
        if isinstance(value, jax.ShapeDtypeStruct):
            target.set_value(jax.ShapeDtypeStruct(value.shape[::-1], value.dtype))  # type: ignore[union-attr]
        else:
            target.set_value(value.T)  # type: ignore[union-attr]


def _fill_state(module: Any) -> None:
    """Give abstract non-parameter variables (an ``nnx.eval_shape`` model's rng keys and
    counters) values: fresh keys, zeros."""
    for _, node in nnx.iter_graph(module):
        if not isinstance(node, nnx.Variable) or is_parameter(node) or not _abstract(node):
            continue
        value = node.get_value()
        if isinstance(node, nnx.RngKey):
            keys = jax.random.key(secrets.randbits(31))
            node.set_value(jax.random.split(keys, value.shape) if value.shape else keys)
        else:
            node.set_value(jnp.zeros(value.shape, value.dtype))


def _model_device(native: NNXModel) -> Any:
    """Where inputs go: the device of the model's first committed array."""
    return _devices.model_device(node.get_value() for _, node in nnx.iter_graph(native.module)
                                 if isinstance(node, nnx.Variable))


def _abstract(var: nnx.Variable) -> bool:
    return isinstance(var.get_value(), jax.ShapeDtypeStruct)


def _call(native: NNXModel, module: Any, xs: Sequence[Any], training: bool) -> Any:
    if native.compute is not None:
        for _, sub in nnx.iter_modules(module):
            if hasattr(sub, "dtype") and sub.dtype != native.compute:
                sub.dtype = native.compute
    if native.spec is not None:
        return module(*xs, training=training)
    return module(*xs)


@contextlib.contextmanager
def _mode(native: NNXModel, training: bool) -> Iterator[None]:
    """An adopted module in train or eval mode (``deterministic`` and
    ``use_running_average`` of every submodule), restored afterwards."""
    saved: list[tuple[Any, str, Any]] = []
    if native.spec is None:  # spec models take ``training`` as an argument instead
        saved = [(module, flag, getattr(module, flag))
                 for _, module in nnx.iter_modules(native.module)
                 for flag in ("deterministic", "use_running_average") if hasattr(module, flag)]
        if training:
            native.module.train()
        else:
            native.module.eval()
    try:
        yield
    finally:
        for module, flag, value in saved:
            setattr(module, flag, value)
