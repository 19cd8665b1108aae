"""The Keras 3 backend: unifparam's primitives on Keras layers, on tensorflow, jax or torch.

Keras fixes its backend when first imported, so the variant (``keras:jax``) is put in
``KERAS_BACKEND`` before that, and a process that already imported Keras with another
backend gets a :class:`unifparam.BackendConflictError`. References to parameters are
:class:`~unifparam_keras._adopt.Ref` objects (layer, attribute, layout).

    >>> be = KerasBackend("jax")                      # doctest: +SKIP
    >>> net = unifparam.build(spec, backend="keras:jax")
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unifparam import Backend, NativeParam, Plan, nn
from unifparam.backend import (
    ABSTRACT,
    ALIAS,
    DEFERRED,
    MATERIALIZED,
    WRITE,
    canonical_shards,
    default_loss,
    native_order,
    native_shard_maker,
    numpy_input,
    to_layout,
    to_numpy,
)
from unifparam.dtypes import EXTENSIONS
from unifparam.errors import (
    BackendConflictError,
    BackendNotFoundError,
    BackendNotInstalledError,
    InputShapeError,
    UnsupportedError,
    fmt_shape,
)

from . import _devices

keras: Any = None  # imported by KerasBackend() once KERAS_BACKEND is settled
ops: Any = None
_adopt: Any = None
_layers: Any = None

KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")


def _import_keras(variant: str | None) -> None:
    """Import Keras on ``variant``'s backend, or fail clearly if it is already set otherwise."""
    global keras, ops, _adopt, _layers
    if variant is not None:
        if "keras" in sys.modules:
            current = sys.modules["keras"].backend.backend()
            if current != variant:
                raise BackendConflictError(
                    f"Keras is already imported in this process with backend {current!r}; "
                    f"backend 'keras:{variant}' needs {variant!r}. Keras fixes its backend per "
                    f"process: run 'keras:{variant}' in a new process, or set "
                    f"KERAS_BACKEND={variant} before anything imports keras (or use "
                    f"'keras:{current}').")
        elif importlib.util.find_spec(variant) is None:
            from unifparam.backend import install_command as command
            raise BackendNotInstalledError(
                f"Backend 'keras:{variant}' needs {variant}, which is not installed. Install "
                f"it with: {command(variant)}, or pick another Keras backend.")
        else:
            os.environ["KERAS_BACKEND"] = variant
    elif "keras" not in sys.modules:
        chosen = os.environ.get("KERAS_BACKEND", "").strip()
        if chosen and chosen not in KERAS_BACKENDS:
            raise BackendNotFoundError(
                f"KERAS_BACKEND={chosen!r} is not a Keras backend; expected one of "
                f"{', '.join(KERAS_BACKENDS)}. Fix the environment variable, or pick the "
                f"backend explicitly: backend='keras:jax'.")
    import keras  # these imports bind the module globals declared above
    from keras import ops

    from . import _adopt, _layers


@dataclass
class KerasModel:
    """The native state: the Keras model and every layer by canonical path."""

    model: Any
    layers: dict[str, Any] = field(default_factory=dict)
    compute: str | None = None  # a mixed policy's compute dtype (set_compute)
    device: str | None = None  # where variables without a value get theirs (Plan.device)


@contextmanager
def _lazy() -> Iterator[None]:
    """Create variables with shapes but no values (Keras's stateless scope), and keep them
    out of Keras's global list so no other scope exit fills them."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope
    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)


class KerasBackend(Backend):
    """Keras 3 adapter: spec layers become Keras layers; values move as numpy."""

    name = "keras"
    capabilities = frozenset({"adopt", "abstract", "transpose_tie", "gradients", "native_apply"})
    copy_by_adoption = True

    def __init__(self, variant: str | None = None):
        _import_keras(variant)
        self.variant = keras.backend.backend()

    # ---- construction ---------------------------------------------------------------
    def build(self, spec: nn.Layer) -> tuple[KerasModel, dict[str, NativeParam]]:
        model, table = _layers.to_keras(spec)
        natives: dict[str, NativeParam] = {}
        for path, layer in nn.first_uses(spec):
            refs = {r.name: r for r in _adopt.schema(table[path])}
            for decl in layer.param_decls():
                name = nn.join(path, decl.name)
                natives[name] = _adopt.native_param(refs[decl.name], name)
        return KerasModel(model, table), natives

    def adopt(self, native: Any) -> tuple[KerasModel, Any]:
        model = KerasModel(native)
        return model, _adopt.describe(native, "", model.layers)

    # ---- size and storage ------------------------------------------------------------
    def infer(self, native: KerasModel, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Any]) -> KerasModel:
        """Adopted models: a symbolic call builds every layer; variables get no values.

        A ``call`` with eager-only control flow (a Python ``if`` on a value) fails on
        symbolic tensors: it is then called as plain Keras would, on data (``inputs``, or
        zeros of ``input_shapes``), still in a stateless scope, so variables are created
        without values (reads give throwaway initial values).
        """
        dtypes = [getattr(x, "dtype", "float32") for x in inputs or ()] or [
            "float32"] * len(input_shapes)
        args = [keras.KerasTensor(tuple(s), dtype=_dtype(d))
                for s, d in zip(input_shapes, dtypes)]
        with _lazy():
            try:
                _call(native.model, args)
            except Exception as symbolic:  # noqa: BLE001 - any failure of the symbolic trace
                data = [_as_tensor(x) for x in inputs] if inputs is not None else [
                    ops.zeros(tuple(s), dtype=_dtype(d)) for s, d in zip(input_shapes, dtypes)]
                try:
                    _call(native.model, data)
                except Exception as eager:
                    raise eager from symbolic
        return native

    def check_input(self, native: KerasModel, inputs: Sequence[Any] | None,
                    input_shapes: Sequence[Any]) -> None:
        """A built model takes only inputs that fit it (Keras's ``build`` refuses others):
        a symbolic call, which creates and changes nothing."""
        dtypes = [getattr(x, "dtype", "float32") for x in inputs or ()] or [
            "float32"] * len(input_shapes)
        args = [keras.KerasTensor(tuple(s), dtype=_dtype(d))
                for s, d in zip(input_shapes, dtypes)]
        try:
            with _lazy():
                _call(native.model, args)
        except Exception as e:  # noqa: BLE001 - Keras raises ValueError or its own types
            built = getattr(native.model, "input_shape", None) if native.model.built else None
            shapes = ", ".join(fmt_shape(tuple(s)) for s in input_shapes)
            raise InputShapeError(
                f"{type(native.model).__name__} {native.model.name!r} is already built"
                f"{f' for inputs of shape {built}' if built else ''}; it cannot take an "
                f"input of shape {shapes}: {_reason(e)}. Pass inputs "
                f"of the shape it was built for, or build a new model.") from None

    def allocate(self, native: KerasModel, plan: Plan) -> KerasModel:
        """Spec layers build from their input shapes; then every variable without a value
        gets Keras's own initializer, except those the core writes next; on
        ``plan.device``, in a ``keras.device`` scope."""
        if plan.device is not None:
            native.device = plan.device
        with _devices.scope(self.variant, plan.device):
            return self._allocate(native, plan)

    def _allocate(self, native: KerasModel, plan: Plan) -> KerasModel:
        deferred = plan.abstract or any(s.fill == WRITE for s in plan.storages.values())
        with _lazy() if deferred else nullcontext():
            for s in plan.storages.values():  # a block's own parameters: planned shapes
                if hasattr(s.ref.layer, "make_param") and s.fill != ALIAS:
                    s.ref.layer.make_param(s.ref.name, s.shape)
            for path, shape in plan.layer_inputs.items():
                layer = native.layers[path]
                if not layer.built:
                    layer.build(tuple(shape))
            for s in plan.storages.values():  # adopted unbuilt layers sized by a file
                layer = s.ref.layer
                x = None if layer.built or s.fill == ALIAS or hasattr(layer, "make_param") \
                    else _adopt.input_shape_for(layer, s.ref.name, s.shape)
                if x is not None:
                    layer.build(x)
        if plan.mesh is not None:
            _place(plan)
        if not plan.abstract:
            skip = {id(s.ref.own()) for s in plan.storages.values()
                    if s.fill == WRITE and _link(s.ref) is None}
            for layer in native.layers.values():  # a shared variable: filled when first seen
                for var in getattr(layer, "variables", ()):  # (a list of layers has none)
                    if var._value is None and id(var) not in skip:
                        var._deferred_initialize()
        for layer in native.layers.values():
            if isinstance(layer, _layers.Stack):
                layer.built = True
        _sync_torch_params(native.layers.values())
        return native

    def mesh_axes(self, mesh: Any) -> dict[str, int]:
        import jax
        if self.variant != "jax" or not isinstance(mesh, jax.sharding.Mesh):
            raise UnsupportedError(
                f"The {self.configuration} backend cannot shard: keras on jax shards over a "
                f"jax.sharding.Mesh (got {type(mesh).__name__}); other Keras backends not yet.")
        return {str(k): int(v) for k, v in mesh.shape.items()}

    def write_sharded(self, native: KerasModel, storage: Any, mesh: Any,
                      block: Callable[[tuple[slice, ...]], np.ndarray]) -> KerasModel:
        """Each device's shard made alone, into the variable whose TensorLayout
        ``allocate`` gave."""
        import jax
        var, to_native = storage.ref.own(), storage.ref.native_perm
        spec = jax.sharding.PartitionSpec(*native_order(storage.shard, to_native))
        value = jax.make_array_from_callback(
            native_order(storage.shape, to_native), jax.sharding.NamedSharding(mesh, spec),
            native_shard_maker(block, to_native, var.dtype))
        _assign(storage.ref, value)
        return native

    def owned_blocks(self, native: KerasModel, ref: Any) -> list[tuple[tuple[slice, ...], Any]]:
        value = getattr(ref.own(), "_value", None)
        if self.variant != "jax" or _link(ref) is not None or value is None:
            return super().owned_blocks(native, ref)
        return canonical_shards(value.addressable_shards, ref.native_perm)

    def status(self, native: KerasModel, ref: Any) -> tuple[nn.Shape | None, str]:
        link = _link(ref)
        if link is not None:
            _, src, transpose = link
            shape, state = self.status(native, src)
            return (tuple(reversed(shape)) if transpose and shape else shape), state
        var = ref.own()
        if var is None:
            return None, DEFERRED
        return _adopt.known_shape(ref), (ABSTRACT if var._value is None else MATERIALIZED)

    def read(self, native: KerasModel, ref: Any) -> np.ndarray:
        value = ref.own() if _link(ref) is None else getattr(ref.layer, ref.attr)
        array = self.to_numpy(value)
        return array if ref.perm is None else np.transpose(array, ref.perm)

    def write(self, native: KerasModel, ref: Any, value: np.ndarray) -> KerasModel:
        link = _link(ref)
        if link is not None:
            _, src, transpose = link
            return self.write(native, src, np.ascontiguousarray(value.T if transpose else value))
        buffer = to_layout(value, ref.native_perm, ref.own().dtype)  # aligned: keras:jax adopts it
        old = ref.own()._value
        device = native.device if old is None or isinstance(old, np.ndarray) else \
            _devices.where(self.variant, old)
        with _devices.scope(self.variant, device):
            _assign(ref, _devices.placed(self.variant, _adoptable(buffer, self.variant), device))
        return native

    def reset(self, native: KerasModel, refs: Sequence[Any]) -> KerasModel:
        for ref in refs:
            init = getattr(ref.layer, f"{ref.store.lstrip('_')}_initializer", None)
            var = ref.own()
            if init is None or var is None:
                continue  # no framework default known: values stay as they are
            init = keras.initializers.get(init)
            config = init.get_config()
            if "seed" in config:  # a fresh draw: an unseeded Keras initializer repeats itself
                init = type(init).from_config({**config, "seed": None})
            var.assign(init(tuple(var.shape), dtype=var.dtype))
        return native

    def alias(self, native: KerasModel, src: Any, dst: Any, transpose: bool) -> KerasModel:
        _layers.link(dst, src, transpose)
        _sync_torch_params(native.layers.values())
        return native

    def set_compute(self, native: KerasModel, dtype: str | None, mixed: bool) -> KerasModel:
        """As Keras does it: every layer gets ``DTypePolicy(dtype)`` (``"mixed_..."`` for a
        mixed policy: float32 variables cast to ``dtype`` inside each call), on every run."""
        native.compute = None if dtype is None else f"mixed_{dtype}" if mixed else dtype
        return native

    def dtype_of(self, native: KerasModel, ref: Any) -> Any:
        var = ref.own() if _link(ref) is None else None
        return None if var is None else var._dtype  # .dtype is the compute dtype in a call

    def cast(self, native: KerasModel, ref: Any, dtype: str) -> KerasModel:
        """The same Variable object (layers and optimizers hold it), in ``dtype``: Keras
        variables cannot change dtype, so its backend value is made anew."""
        var = ref.own()
        value = var._value
        var._dtype = keras.backend.standardize_dtype(dtype)
        if value is not None:
            new = ops.cast(value, dtype)
            var._value = None
            var._initialize(new)
            _sync_torch_params([ref.layer])
        return native

    def trainable(self, native: KerasModel, ref: Any) -> bool:
        """Keras's own flags, now: the layer's ``trainable`` (set on a layer, Keras sets it
        on its sublayers and variables too) and the variable's."""
        var = ref.own()
        return bool(ref.trainable and native.model.trainable and ref.layer.trainable
                    and (var is None or var.trainable))

    def watch(self, native: KerasModel, callback: Callable[[], None]) -> None:
        """Unbuilt layers call back right after Keras builds them (their first call)."""
        for layer in native.layers.values():
            if isinstance(layer, keras.layers.Layer) and not layer.built:
                _after_build(layer, callback)

    def native_object(self, native: KerasModel, ref: Any) -> Any:
        return ref.own()

    def native_layer(self, native: KerasModel, path: str) -> Any:
        return native.layers[path] if path else native.model

    # ---- devices ---------------------------------------------------------------------
    def devices(self) -> list[str]:
        return _devices.names(self.variant)

    def default_device(self) -> str:
        return _devices.default(self.variant)

    def device_name(self, device: Any) -> str | None:
        return _devices.name_of(self.variant, device)

    def native_device(self, device: str) -> Any:
        return _devices.native(self.variant, device)

    def device_of(self, native: KerasModel, ref: Any) -> str | None:
        link = _link(ref)
        if link is not None:
            return self.device_of(native, link[1])
        var = ref.own()
        return None if var is None else _devices.where(self.variant, var._value)

    def move(self, native: KerasModel, device: str) -> KerasModel:
        """Each variable (a tied use reads its root's) gets its value on ``device``."""
        if self.variant not in ("jax", "torch") and any(
                _devices.where(self.variant, v._value) not in (None, device)
                for v in _variables(native)):
            raise UnsupportedError(f"The {self.configuration} backend cannot move variables "
                                   f"between devices yet; materialize on {device!r} instead.")
        for var in _variables(native):
            if var._value is not None and _devices.where(self.variant, var._value) != device:
                var._value = _devices.moved(self.variant, var._value, device, var.trainable)
        native.device = device
        _sync_torch_params(native.layers.values() or [native.model])
        return native

    # ---- compute -------------------------------------------------------------------
    def run(self, native: KerasModel, inputs: Sequence[Any], training: bool
            ) -> tuple[Any, KerasModel]:
        _policies(native)
        device = _model_device(native, self.variant)
        with _devices.scope(self.variant, device):
            xs = [_as_tensor(x, self.variant, device) for x in inputs]
            return _call(native.model, xs, training=training), native

    def gradients(self, native: KerasModel, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Any],
                  training: bool = False) -> Any:
        device = _model_device(native, self.variant)
        with _devices.scope(self.variant, device):
            return self._gradients(native, inputs, loss, refs, device, training)

    def _gradients(self, native: KerasModel, inputs: Sequence[Any],
                   loss: Callable[[Any], Any] | None, refs: Mapping[str, Any],
                   device: str | None, training: bool) -> Any:
        xs = [_as_tensor(x, self.variant, device) for x in inputs]
        variables = [ref.own() for ref in refs.values()]
        _policies(native)

        def objective() -> Any:
            out = _call(native.model, xs, training=training)
            if loss is not None:
                return loss(out)
            return default_loss(out, ops.sum, lambda x: "float" in keras.backend.standardize_dtype(
                getattr(x, "dtype", "int32")))

        state = native.model.non_trainable_variables if training else []
        grads = _gradients(objective, variables, state)
        out = {}
        for (name, ref), var, g in zip(refs.items(), variables, grads):
            g = np.zeros(tuple(var.shape), np.float32) if g is None else self.to_numpy(g)
            out[name] = g if ref.perm is None else np.ascontiguousarray(g.transpose(ref.perm))
        return (out, native) if training else out

    def to_numpy(self, value: Any) -> np.ndarray:
        return super().to_numpy(value.value if isinstance(value, keras.Variable) else value)


def _after_build(layer: Any, callback: Callable[[], None]) -> None:
    """Wrap the layer's ``build`` (Keras's own wrapper of it) to call ``callback`` after."""
    inner = layer.build
    callbacks = getattr(inner, "unifparam_callbacks", None)
    if callbacks is not None:  # already wrapped: one more model watches it
        callbacks.append(callback)
        return

    @functools.wraps(inner)  # keeps the signature Keras reads to pass the input shape
    def build(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        callbacks = build.unifparam_callbacks  # type: ignore[attr-defined]
        for var in layer.variables:  # built symbolically (model.fit): values come later
            if var._value is None:
                _after_value(var, callbacks)
        with _eager():
            for settle in list(callbacks):
                settle()
        return out

    build.unifparam_callbacks = [callback]  # type: ignore[attr-defined]
    object.__setattr__(layer, "build", build)  # not tracked as layer state


def _eager() -> Any:
    """Writes made while TensorFlow traces a function (``model.fit`` builds the model
    inside its ``tf.function``) run eagerly, once, not as ops of the traced graph."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.init_scope()
    return nullcontext()


def _after_value(var: Any, callbacks: list[Callable[[], None]]) -> None:
    """Call ``callbacks`` once Keras gives the variable built without a value (a symbolic
    build, as ``model.fit`` makes) its initial value."""
    inner = var._deferred_initialize
    if getattr(inner, "unifparam_wrapped", False):
        return

    def deferred_initialize(*args: Any, **kwargs: Any) -> Any:
        out = inner(*args, **kwargs)
        del var._deferred_initialize  # once: the class's method again
        with _eager():
            for settle in list(callbacks):
                settle()
        return out

    deferred_initialize.unifparam_wrapped = True  # type: ignore[attr-defined]
    var._deferred_initialize = deferred_initialize


def _reason(error: Exception) -> str:
    """The line of a Keras error that says what did not fit (its text wraps it in more)."""
    import re
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in str(error).splitlines()]
    return next((x for x in lines if "expected" in x or "incompatible" in x),
                lines[0] if lines else type(error).__name__)


def _adoptable(buffer: np.ndarray, variant: str) -> Any:
    """A fresh, aligned, private ``buffer`` as the backend's tensor sharing its memory.

    ``tf.Variable(ndarray)`` copies every value twice (``ndarray.copy``, then into an
    eager tensor) and Keras on torch copies an ndarray with ``np.array``; from a tensor
    made without a copy (dlpack, ``torch.from_numpy``) the variable adopts the memory.
    Only for buffers nothing else holds: the variable writes into them. Keras on jax
    adopts the aligned ndarray itself.
    """
    if buffer.ndim == 0 or not buffer.flags.c_contiguous or not buffer.flags.writeable \
            or buffer.ctypes.data % 64 or buffer.dtype.name in EXTENSIONS:  # no dlpack
        return buffer
    if variant == "tensorflow":
        import tensorflow as tf
        return tf.experimental.dlpack.from_dlpack(buffer.__dlpack__())
    if variant == "torch":
        import torch
        return torch.from_numpy(buffer)
    return buffer


def _assign(ref: Any, value: Any) -> None:
    """Give ``ref``'s variable ``value``; a variable left empty by materialize is created by
    its first value."""
    var = ref.own()
    if var._value is None:
        var._initialize(value)
        _sync_torch_params([ref.layer])
    else:
        var.assign(value)


def _sync_torch_params(layers: Iterable[Any]) -> None:
    """Torch-backed Keras mirrors variables in a ParameterDict per layer: refresh it once
    the layer's variables all have values (after ties, materialization, a first write) so
    ``model.parameters()`` matches ``model.variables``."""
    for layer in layers:
        if hasattr(layer, "_torch_params") and all(v._value is not None for v in layer.variables):
            layer._track_variables()


def _call(model: Any, xs: Sequence[Any], **kwargs: Any) -> Any:
    """``model(*xs)``; a functional model with several inputs takes them as one list
    (its ``call(inputs, training)`` would read a second positional input as ``training``)."""
    from keras.src.models.functional import Functional
    if isinstance(model, Functional) and len(xs) > 1:
        return model(list(xs), **kwargs)
    return model(*xs, **kwargs)


def _policies(native: KerasModel) -> None:
    """Every layer under the mixed policy ``set_compute`` asked for (layers built since
    included)."""
    if native.compute is None:
        return
    policy = keras.DTypePolicy(native.compute)
    for layer in [native.model, *native.model._flatten_layers(include_self=False)]:
        if layer.dtype_policy.name != policy.name:
            layer.dtype_policy = policy


def _link(ref: Any) -> tuple[Any, Any, bool] | None:
    return vars(ref.layer).get("_unifparam_links", {}).get(ref.attr)


def _dtype(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype)).removeprefix("torch.")
    return "float32" if "float" in name else name


def _as_tensor(x: Any, variant: str | None = None, device: str | None = None) -> Any:
    """An input as the backend's tensor on ``device``: numpy and other frameworks' arrays
    through the host."""
    if isinstance(x, (np.ndarray, list, tuple, float, int)):
        return ops.convert_to_tensor(numpy_input(x))
    if hasattr(x, "shape") and not ops.is_tensor(x) and not isinstance(x, keras.KerasTensor):
        return ops.convert_to_tensor(numpy_input(to_numpy(x)))
    return _devices.to_device(variant, x, device) if ops.is_tensor(x) and variant else x


def _variables(native: KerasModel) -> list[Any]:
    """Every variable of the model once (weights, statistics, seeds)."""
    found = {id(v): v for layer in [native.model, *native.layers.values()]
             for v in getattr(layer, "variables", ())}
    return list(found.values())


def _model_device(native: KerasModel, variant: str) -> str | None:
    """Where the model's first variable with a value is: inputs and the run go there."""
    for var in getattr(native.model, "variables", ()):
        where = _devices.where(variant, var._value)
        if where is not None and "," not in where:
            return where
    return None


def _gradients(objective: Callable[[], Any], variables: list[Any],
               state: Sequence[Any] = ()) -> list[Any]:
    """The gradient of ``objective()`` for each variable (None: unused), by the Keras
    backend's own autodiff. The ``state`` variables the forward assigns (a training
    forward's moving statistics, dropout's seeds) keep their new values, on jax too."""
    values = [v.value for v in variables]
    if keras.backend.backend() == "jax":
        import jax
        from keras.src.backend.common.stateless_scope import StatelessScope

        def f(values: list[Any]) -> Any:
            with StatelessScope(state_mapping=list(zip(variables, values)),
                                initialize_variables=False) as scope:
                value = objective()
                return value, [scope.get_current_value(v) for v in state]

        grads, updates = jax.grad(f, has_aux=True)(values)
        for v, new in zip(state, updates):
            if new is not None:
                v.assign(new)
        return grads
    if keras.backend.backend() == "torch":
        import torch
        with torch.enable_grad():
            return list(torch.autograd.grad(objective(), values, allow_unused=True))
    import tensorflow as tf
    with tf.GradientTape() as tape:
        value = objective()
    return [None if g is None else tf.convert_to_tensor(g)  # IndexedSlices
            for g in tape.gradient(value, values)]


def _place(plan: Plan) -> None:
    """Give each sharded variable the plan's placement as Keras's own ``TensorLayout``
    (native dimension order) on a Keras ``DeviceMesh`` of the same devices and axis names."""
    from keras import distribution
    mesh = plan.mesh
    device_mesh = distribution.DeviceMesh(tuple(mesh.devices.shape), tuple(mesh.axis_names),
                                          mesh.devices)
    for s in plan.storages.values():
        var = s.ref.own() if _link(s.ref) is None else None
        if var is not None and s.shard is not None:
            axes = native_order(s.shard, s.ref.native_perm)
            var._layout = distribution.TensorLayout(axes, device_mesh)
