"""The PyTorch backend: unifparam's primitives on torch modules.

References to parameters are ``(module, attribute)`` pairs, so they stay valid when a
lazy module turns into its eager class or a tensor is replaced (meta -> to_empty).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn as tnn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin
from torch.nn.utils import parametrize

from unifparam import Backend, NativeParam, Plan, Storage, nn
from unifparam.backend import (
    ABSTRACT,
    ALIAS,
    DEFAULT,
    DEFERRED,
    MATERIALIZED,
    TORCH_VIEWS,
    default_loss,
    numpy_input,
    to_numpy,
    torch_numpy,
)
from unifparam.errors import InitializerError, InputShapeError, UnsupportedError, fmt_shape

from . import _constructed as constructed
from ._adopt import describe, native_param
from ._layers import to_torch

Ref = tuple[tnn.Module, str]


class _Transpose(tnn.Module):
    """Parametrization for a transposed tie: the tied use sees the root's transpose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t()


class TorchBackend(Backend):
    """PyTorch adapter: spec layers become (lazy) torch modules; values move as numpy."""

    name = "torch"
    capabilities = frozenset({"adopt", "abstract", "transpose_tie", "gradients", "native_apply"})

    # ---- construction ---------------------------------------------------------------
    def build(self, spec: nn.Layer) -> tuple[tnn.Module, dict[str, NativeParam]]:
        module = to_torch(spec)
        natives: dict[str, NativeParam] = {}
        for path, layer in nn.first_uses(spec):
            sub = module.get_submodule(path) if path else module
            for decl in layer.param_decls():
                name = nn.join(path, decl.name)
                tensor = getattr(sub, decl.name)
                natives[name] = native_param(sub, decl.name, tensor,
                                             isinstance(tensor, tnn.Parameter), name)
        return module, natives

    def adopt(self, native: tnn.Module) -> tuple[tnn.Module, Any]:
        return native, describe(native)

    # ---- size and storage ------------------------------------------------------------
    def infer(self, native: tnn.Module, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Any]) -> tnn.Module:
        """Adopted models: run the forward pass on meta tensors (no memory, no values).

        It runs first on a copy that shares every sized tensor: a forward that fails leaves
        the model as it was (lazy layers still lazy). Lazy layers are then sized by torch's
        own hook, their parameter objects kept (an optimizer made before holds them)."""
        if inputs is not None:
            args = [_as_tensor(x).to("meta") for x in inputs]
        else:  # the probe input in the model's own floating dtype (float64 layers take float64)
            dtype = next((t.dtype for t in [*native.parameters(), *native.buffers()]
                          if t.is_floating_point()), torch.get_default_dtype())
            args = [torch.empty(tuple(s), device="meta", dtype=dtype) for s in input_shapes]
        _UNDO[native] = [_snapshot(m) for m in native.modules()
                         if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()]
        trial = _shallow_copy(native)
        if trial is not None:
            try:
                _meta_forward(trial, args)
            except Exception as e:
                shapes = ", ".join(fmt_shape(tuple(a.shape)) for a in args)
                raise InputShapeError(
                    f"{type(native).__name__} cannot run on an input of shape {shapes}: "
                    f"{type(e).__name__}: {e}. Nothing was changed; pass an input of the "
                    f"size the model takes.") from e
        _meta_forward(native, args)
        return native

    def uninfer(self, native: tnn.Module) -> tnn.Module:
        for restore in _UNDO.pop(native, ()):
            restore()
        return native

    def allocate(self, native: tnn.Module, plan: Plan) -> tnn.Module:
        """Lazy spec layers learn their input size (a meta input); then planned tensors get
        CPU memory, filled by the module's ``reset_parameters`` where the plan says DEFAULT.
        Tensors the core writes next stay on meta: ``write`` adopts the core's buffer.
        Meta buffers no plan fills get their constructor's values (see ``_constructed``)."""
        built = {} if plan.abstract else constructed.recompute(
            native, [s.ref for s in plan.storages.values()])
        for path, shape in plan.layer_inputs.items():
            module = native.get_submodule(path) if path else native
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
                _uninitialized_to_meta(module)
                module._infer_parameters(module, (torch.empty(tuple(shape), device="meta"),))
        _UNDO.pop(native, None)
        fresh: dict[int, tuple[tnn.Module, dict[str, Storage]]] = {}
        device = _native_device(plan.device or "cpu:0")
        for storage in plan.storages.values():
            module, attr = storage.ref
            tensor = getattr(module, attr)
            if isinstance(tensor, UninitializedTensorMixin):  # sized by the plan (a block's
                _uninitialized_to_meta(module)  # own, a lazy layer loaded from a file)
                tensor = getattr(module, attr)
                tensor.materialize(storage.shape, device="meta")  # in place, as torch does
            # off the CPU the core's buffer cannot be adopted: WRITE storages get memory too
            if plan.abstract or not tensor.is_meta or storage.fill not in (DEFAULT, ALIAS) \
                    and device.type == "cpu":
                continue
            # not empty_like: from meta it runs torch's Python reference, importing sympy;
            # swapped in place: the Parameter object stays the one optimizers hold
            torch.utils.swap_tensors(tensor, _like(tensor, torch.empty(
                tensor.shape, dtype=tensor.dtype, device=device)))
            if storage.fill == DEFAULT:
                fresh.setdefault(id(module), (module, {}))[1][attr] = storage
        if plan.abstract:
            return native
        hf = constructed.owners(native) if fresh else {}
        for module, storages in fresh.values():
            if id(module) in hf:  # a Hugging Face model's default is its _init_weights
                done = constructed.hf_defaults(module, hf[id(module)], storages)
                storages = {a: s for a, s in storages.items() if a not in done}
            if storages:
                _fill_defaults(module, storages, device)
        constructed.install(built)
        if plan.device is not None:  # buffers no plan names (counters) go along
            self.move(native, plan.device)
        if plan.mesh is not None:  # framework defaults: made whole, then scattered from rank 0
            from torch.distributed.tensor import distribute_tensor
            for storage in plan.storages.values():
                module, attr = storage.ref
                tensor = getattr(module, attr)
                if storage.fill == DEFAULT and storage.shard is not None and \
                        not tensor.is_meta and not _is_dtensor(tensor):
                    dt = distribute_tensor(tensor.detach(), plan.mesh,
                                           _placements(plan.mesh, storage.shard))
                    _store(module, attr, _like(tensor, dt))
        return native

    def owned_blocks(self, native: tnn.Module, ref: Ref) -> list[tuple[tuple[slice, ...], Any]]:
        """This rank's block of a DTensor (none if it is not the first replica); a plain
        tensor is written by rank 0 alone."""
        import torch.distributed as dist
        tensor = getattr(ref[0], ref[1]).detach()
        if not _is_dtensor(tensor):
            if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
                return []
            return super().owned_blocks(native, ref)
        index, first = _local_block(tuple(tensor.shape), tensor.placements, tensor.device_mesh)
        return [(index, torch_numpy(tensor.to_local().cpu()))] if first else []

    def mesh_axes(self, mesh: Any) -> dict[str, int]:
        from torch.distributed.device_mesh import DeviceMesh
        if not isinstance(mesh, DeviceMesh) or mesh.mesh_dim_names is None:
            raise UnsupportedError(
                f"The torch backend shards over a DeviceMesh with named dimensions, got "
                f"{type(mesh).__name__}: init_device_mesh('cpu', (2,), mesh_dim_names=('model',)).")
        return {str(n): int(mesh.size(i)) for i, n in enumerate(mesh.mesh_dim_names)}

    def write_sharded(self, native: tnn.Module, storage: Storage, mesh: Any,
                      block: Callable[[tuple[slice, ...]], np.ndarray]) -> tnn.Module:
        """This rank makes only its own block and wraps it as a DTensor (``from_local``)."""
        from torch.distributed.tensor import DTensor
        module, attr = storage.ref
        tensor = getattr(module, attr)
        placements = _placements(mesh, storage.shard)
        index, _ = _local_block(storage.shape, placements, mesh)
        local = from_numpy(np.ascontiguousarray(block(index))).to(tensor.dtype)
        dt = DTensor.from_local(local, mesh, placements, run_check=False,
                                shape=torch.Size(storage.shape),
                                stride=torch.empty(storage.shape, device="meta").stride())
        _store(module, attr, _like(tensor, dt))
        return native

    def status(self, native: tnn.Module, ref: Ref) -> tuple[tuple[int | None, ...] | None, str]:
        module, attr = ref
        tensor = getattr(module, attr)
        if isinstance(tensor, UninitializedTensorMixin):
            return None, DEFERRED
        return tuple(tensor.shape), (ABSTRACT if tensor.is_meta else MATERIALIZED)

    def read(self, native: tnn.Module, ref: Ref) -> np.ndarray:
        tensor = getattr(ref[0], ref[1]).detach()
        if _is_dtensor(tensor):  # a collective: every rank of the mesh reads it
            tensor = tensor.full_tensor()
        return torch_numpy(tensor.cpu())

    def write(self, native: tnn.Module, ref: Ref, value: np.ndarray) -> tnn.Module:
        tensor = getattr(ref[0], ref[1])
        source = from_numpy(np.asarray(value, order="C"))  # 0-d stays 0-d
        if tensor.is_meta and value.flags.writeable and source.dtype == tensor.dtype:
            # adopt the core's fresh buffer in place: same object, so ties by identity hold
            torch.utils.swap_tensors(tensor, _like(tensor, source))
            return native
        if tensor.is_meta:
            torch.utils.swap_tensors(tensor, _like(tensor, source.to(tensor.dtype).clone()))
            return native
        with torch.no_grad():
            tensor.copy_(source)
        return native

    def reset(self, native: tnn.Module, refs: Sequence[Ref]) -> tnn.Module:
        by_module: dict[int, tuple[tnn.Module, set[str]]] = {}
        for module, attr in refs:
            by_module.setdefault(id(module), (module, set()))[1].add(attr)
        for module, attrs in by_module.values():
            if hasattr(module, "reset_parameters"):  # else no framework default: values stay
                _reset_only(module, attrs)
        return native

    def alias(self, native: tnn.Module, src: Ref, dst: Ref, transpose: bool) -> tnn.Module:
        (sm, sa), (dm, da) = src, dst
        tensor = getattr(sm, sa)
        if transpose:
            if not parametrize.is_parametrized(dm, da):
                parametrize.register_parametrization(dm, da, _Transpose(), unsafe=True)
            dm.parametrizations[da].original = tensor
        elif da in dm._parameters:
            dm._parameters[da] = tensor
        else:
            dm._buffers[da] = tensor
        return native

    def dtype_of(self, native: tnn.Module, ref: Ref) -> Any:
        return getattr(ref[0], ref[1]).dtype

    def set_compute(self, native: tnn.Module, dtype: str | None, mixed: bool) -> tnn.Module:
        """Mixed precision as torch does it: ``net(X)`` runs under ``torch.autocast``
        (otherwise torch computes in the parameters' dtype)."""
        native._unifparam_compute = getattr(torch, dtype) if mixed and dtype else None
        return native

    def cast(self, native: tnn.Module, ref: Ref, dtype: str) -> tnn.Module:
        """``tensor.to(dtype)``, swapped into the same Parameter object (as ``module.to``
        does), so every module holding it sees the new dtype."""
        module, attr = ref
        tensor, target = getattr(module, attr), getattr(torch, dtype)
        if isinstance(tensor, UninitializedTensorMixin):
            kind = UninitializedParameter if isinstance(tensor, tnn.Parameter) \
                else UninitializedBuffer
            _store(module, attr, kind(tensor.requires_grad, tensor.device, target))
            return native
        with torch.no_grad():
            new = _like(tensor, tensor.detach().to(target))
        try:
            torch.utils.swap_tensors(tensor, new)
        except RuntimeError:  # a tensor something else holds a weak reference to
            _store(module, attr, new)
        return native

    def trainable(self, native: tnn.Module, ref: Ref) -> bool:
        module, attr = ref
        if attr in module._buffers:
            return False
        tensor = module.parametrizations[attr].original if parametrize.is_parametrized(
            module, attr) else getattr(module, attr)
        return bool(tensor.requires_grad)

    def watch(self, native: tnn.Module, callback: Callable[[], None]) -> None:
        """Lazy modules call back once torch's own first call has sized them."""
        for module in native.modules():
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
                _watch(module, callback)

    def native_object(self, native: tnn.Module, ref: Ref) -> Any:
        return getattr(ref[0], ref[1])

    def native_layer(self, native: tnn.Module, path: str) -> tnn.Module:
        return native.get_submodule(path) if path else native

    # ---- devices ---------------------------------------------------------------------
    def devices(self) -> list[str]:
        gpus = [f"gpu:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        return ["cpu:0", *gpus, *(["mps:0"] if mps is not None and mps.is_available() else [])]

    def placeable(self, device: str) -> bool:
        return device == "meta" or device in self.devices()

    def device_name(self, device: Any) -> str | None:
        if not isinstance(device, torch.device):
            return None
        if device.type == "meta":
            return "meta"
        kind = "gpu" if device.type == "cuda" else device.type
        index = device.index if device.index is not None else (
            torch.cuda.current_device() if kind == "gpu" else 0)
        return f"{kind}:{index}"

    def native_device(self, device: str) -> torch.device:
        return _native_device(device)

    def device_of(self, native: tnn.Module, ref: Ref) -> str | None:
        tensor = getattr(ref[0], ref[1])
        if isinstance(tensor, UninitializedTensorMixin) or tensor.is_meta:
            return None
        return self.device_name(tensor.device)

    def move(self, native: tnn.Module, device: str) -> tnn.Module:
        """Every parameter and buffer with memory, in place: the same tensor objects (ties
        by identity hold, ``requires_grad`` and dtype kept) hold the moved data."""
        target = _native_device(device)
        replaced: dict[int, torch.Tensor] = {}  # to meta: one new tensor per old one
        for module in native.modules():
            for table in (module._parameters, module._buffers):
                for key, tensor in table.items():
                    if id(tensor) in replaced:  # tied: the same new tensor everywhere
                        table[key] = replaced[id(tensor)]
                        continue
                    if tensor is None or isinstance(tensor, UninitializedTensorMixin) or \
                            tensor.is_meta or tensor.device == target or _is_dtensor(tensor):
                        continue
                    if target.type == "meta":  # another tensor type: .data cannot hold it
                        replaced[id(tensor)] = table[key] = _like(tensor, tensor.detach().to(
                            target))
                    else:
                        tensor.data = tensor.detach().to(target)
        return native

    # ---- compute -------------------------------------------------------------------
    def run(self, native: tnn.Module, inputs: Sequence[Any], training: bool
            ) -> tuple[Any, tnn.Module]:
        _check_no_meta_buffers(native)
        device = _model_device(native)
        with _Mode(native, training), _replicated_inputs(native), _autocast(native, device):
            return native(*_inputs(native, inputs, device)), native

    def gradients(self, native: tnn.Module, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Ref],
                  training: bool = False) -> Any:
        tensors = [getattr(m, a) for m, a in refs.values()]
        _check_no_meta_buffers(native)
        device = _model_device(native)
        with _Mode(native, training), torch.enable_grad(), _replicated_inputs(native), \
                _autocast(native, device):
            out = native(*_inputs(native, inputs, device))
            value = loss(out) if loss is not None else default_loss(
                out, torch.sum, lambda t: isinstance(t, torch.Tensor) and t.is_floating_point())
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        out = {n: (np.zeros(tuple(t.shape), np.float32) if g is None else self.to_numpy(g))
               for n, t, g in zip(refs, tensors, grads)}
        return (out, native) if training else out  # train(): statistics updated in place


def _meta_forward(native: tnn.Module, args: Sequence[torch.Tensor]) -> None:
    """``native(*args)`` on meta tensors: lazy layers learn their sizes, nothing is allocated."""
    for module in native.modules():
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            _uninitialized_to_meta(module)
    metas = {n: torch.empty_like(t, device="meta") for n, t in
             [*native.named_parameters(remove_duplicate=False),
              *native.named_buffers(remove_duplicate=False)]
             if not isinstance(t, UninitializedTensorMixin) and not t.is_meta}
    with _Mode(native, False), torch.no_grad():
        torch.func.functional_call(native, metas, tuple(args), strict=False)


def _shallow_copy(native: tnn.Module) -> tnn.Module | None:
    """A copy of ``native``'s modules that shares every sized tensor (None if the model
    cannot be copied: then the forward runs on the model itself)."""
    import copy
    memo = {id(t): t for _, t in [*native.named_parameters(remove_duplicate=False),
                                  *native.named_buffers(remove_duplicate=False)]
            if not isinstance(t, UninitializedTensorMixin)}
    try:
        return copy.deepcopy(native, memo)
    except Exception:  # noqa: BLE001 - an attribute deepcopy refuses: no trial run
        return None


#: root module -> how to undo the last infer (its lazy modules as they were)
_UNDO: weakref.WeakKeyDictionary[tnn.Module, list[Callable[[], None]]] = \
    weakref.WeakKeyDictionary()


def _snapshot(module: tnn.Module) -> Callable[[], None]:
    """A function putting a lazy ``module`` back as it is now: its class, attributes and
    hooks (torch's lazy hook removes its own), and its uninitialized tensors, in place."""
    cls, attrs = module.__class__, dict(vars(module))
    hooks = {k: dict(v) for k, v in attrs.items() if isinstance(v, dict)
             and k not in ("_parameters", "_buffers", "_modules")}
    lazy = {k: (t, t.requires_grad, t.device, t.dtype) for k, t in
            [*module._parameters.items(), *module._buffers.items()]
            if isinstance(t, UninitializedTensorMixin)}

    def restore() -> None:
        module.__class__ = cls
        for key in set(vars(module)) - set(attrs):
            delattr(module, key)
        for key, value in attrs.items():
            if key in hooks:  # in place: RemovableHandles hold these dicts weakly
                value.clear()
                value.update(hooks[key])
            object.__setattr__(module, key, value)
        for t, grad, device, dtype in lazy.values():
            kind = UninitializedParameter if isinstance(t, tnn.Parameter) else UninitializedBuffer
            torch.utils.swap_tensors(t, kind(grad, device, dtype))
    return restore


# ---- a lazy layer materialized by torch itself (its own first call) ----------------------
#: lazy module -> callbacks of the models watching it (weak: a dropped module is forgotten)
_WATCHERS: weakref.WeakKeyDictionary[tnn.Module, list[Callable[[], None]]] = \
    weakref.WeakKeyDictionary()


def _watch(module: tnn.Module, callback: Callable[[], None]) -> None:
    """Call ``callback`` after torch's lazy hook sizes ``module``, before its forward."""
    _WATCHERS.setdefault(module, []).append(callback)
    if _after_native_init not in module._forward_pre_hooks.values():  # (a copy has it)
        module.register_forward_pre_hook(_after_native_init)  # runs after torch's lazy hook


def _after_native_init(module: tnn.Module, args: Any) -> None:
    """Forward pre-hook (a module-level function, so the module still pickles): once the
    module's tensors have memory, tell the watching models, then remove itself."""
    own = [*module._parameters.values(), *module._buffers.values()]
    if any(t is not None and (isinstance(t, UninitializedTensorMixin) or t.is_meta)
           for t in own):
        return  # still lazy, or sized abstractly by unifparam's meta run
    for key, hook in list(module._forward_pre_hooks.items()):
        if hook is _after_native_init:
            del module._forward_pre_hooks[key]
    for callback in _WATCHERS.pop(module, []):
        callback()


def _is_dtensor(tensor: Any) -> bool:
    return type(tensor).__name__ == "DTensor" or type(getattr(tensor, "data", None)).__name__ \
        == "DTensor"


def _replicated_inputs(native: tnn.Module) -> Any:
    """With sharded (DTensor) parameters, plain inputs and buffers count as replicated on
    the mesh, so ``net(x)`` runs as on one device (its output is a DTensor)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or not any(
            _is_dtensor(p) for p in native.parameters()):
        return contextlib.nullcontext()  # the usual case, decided without a parameter walk
    from torch.distributed.tensor.experimental import implicit_replication
    return implicit_replication()


def _placements(mesh: Any, shard: tuple[str | None, ...] | None) -> list[Any]:
    """DTensor placements (one per mesh dimension) for a canonical placement."""
    from torch.distributed.tensor import Replicate, Shard
    shard = shard or ()
    return [Shard(shard.index(n)) if n in shard else Replicate() for n in mesh.mesh_dim_names]


def _local_block(shape: tuple[int, ...], placements: Sequence[Any], mesh: Any
                 ) -> tuple[tuple[slice, ...], bool]:
    """This rank's block of a tensor placed by ``placements``, and whether this rank holds
    its first replica (coordinate 0 on every mesh dimension it is replicated over)."""
    from torch.distributed.tensor import Shard
    coord = mesh.get_coordinate()
    index = [slice(0, n) for n in shape]
    for i, placement in enumerate(placements):
        if isinstance(placement, Shard):
            step = shape[placement.dim] // mesh.size(i)
            index[placement.dim] = slice(coord[i] * step, (coord[i] + 1) * step)
    first = all(isinstance(p, Shard) or coord[i] == 0 for i, p in enumerate(placements))
    return tuple(index), first


def from_numpy(arr: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy``, bfloat16 and float8 included (shares memory, as it does)."""
    name = arr.dtype.name
    if name not in TORCH_VIEWS:
        return torch.from_numpy(arr)
    bits = arr.view(np.dtype(TORCH_VIEWS[name]))
    return torch.from_numpy(bits).view(getattr(torch, name))


def _like(template: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """``data`` as the same kind of tensor as ``template`` (Parameter or buffer)."""
    if isinstance(template, tnn.Parameter):
        return tnn.Parameter(data, requires_grad=template.requires_grad)
    return data


def _store(module: tnn.Module, attr: str, tensor: torch.Tensor) -> None:
    (module._parameters if attr in module._parameters else module._buffers)[attr] = tensor


def _fill_defaults(module: tnn.Module, storages: Mapping[str, Storage],
                   device: torch.device) -> None:
    """The module's own default values for ``storages`` (its other tensors kept as they
    are); the plan's fallback values where the module has no default (no
    ``reset_parameters``: GPT-2's Conv1D, Llama's RMSNorm), so no memory stays unfilled."""
    if hasattr(module, "reset_parameters") or hasattr(module, "reset_running_stats"):
        for k, b in module._buffers.items():  # a counter, not a parameter: its reset sets it
            if b is not None and b.is_meta and k not in module._non_persistent_buffers_set \
                    and not b.is_floating_point():
                module._buffers[k] = torch.zeros_like(b, device=device)
    if hasattr(module, "reset_parameters"):
        _reset_only(module, storages)  # meta tensors left in it are no-ops
        return
    stats = ("running_mean", "running_var")
    if hasattr(module, "reset_running_stats") and any(k in stats for k in storages):
        module.reset_running_stats()
    for attr, storage in storages.items():
        if attr not in stats or not hasattr(module, "reset_running_stats"):
            if storage.fallback is None:  # a plan made by hand: the core always gives one
                raise InitializerError(
                    f"Storage '{storage.name}': {type(module).__name__} has no "
                    f"reset_parameters and the plan gives no fallback. Give the Storage a "
                    f"fallback, or fill='write'.")
            with torch.no_grad():
                getattr(module, attr).copy_(from_numpy(np.asarray(storage.fallback())))


def _reset_only(module: tnn.Module, attrs: Collection[str]) -> None:
    """``module.reset_parameters()`` for ``attrs`` alone: its other tensors keep their values."""
    keep = {k: t.detach().clone() for k, t in [*module._parameters.items(),
                                                *module._buffers.items()]
            if t is not None and k not in attrs and not t.is_meta}
    module.reset_parameters()
    with torch.no_grad():
        for k, t in keep.items():
            getattr(module, k).copy_(t)


def _check_no_meta_buffers(native: tnn.Module) -> None:
    """Buffers that are not parameters of the model (non-persistent or integer ones, such as
    Llama's rotary ``inv_freq`` or BERT's ``position_ids``) hold values only their module's
    constructor computes: built under ``torch.device("meta")`` they have none, and no
    default fills them. Say so, rather than run on missing memory."""
    meta = [name for name, _, _ in constructed.meta_buffers(native, ())]
    if meta:
        raise constructed.unfilled(meta, "cannot run", "set the buffers yourself after "
                                   "materialize(net)")


def _uninitialized_to_meta(module: tnn.Module) -> None:
    """Point a lazy module's uninitialized tensors at the meta device (no memory later),
    in place: the objects stay those an optimizer or the user holds."""
    for p in module._parameters.values():
        if isinstance(p, UninitializedParameter) and not p.is_meta:
            torch.utils.swap_tensors(p, UninitializedParameter(p.requires_grad, "meta", p.dtype))
    for b in module._buffers.values():
        if isinstance(b, UninitializedBuffer) and not b.is_meta:
            torch.utils.swap_tensors(b, UninitializedBuffer(b.requires_grad, "meta", b.dtype))


def _autocast(native: tnn.Module, device: torch.device | None) -> Any:
    """``torch.autocast`` to the compute dtype a mixed policy set, else nothing."""
    dtype = getattr(native, "_unifparam_compute", None)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type if device is not None else "cpu", dtype=dtype)


def _inputs(native: tnn.Module, inputs: Sequence[Any], device: torch.device | None
            ) -> list[torch.Tensor]:
    """The inputs as tensors on ``device``, floating ones in the dtype of the model's first
    floating parameter (a bfloat16 model takes numpy float32 inputs; ids stay integers)."""
    tensors = [_as_tensor(x, device) for x in inputs]
    if not any(t.is_floating_point() for t in tensors):
        return tensors
    dtype = next((p.dtype for p in native.parameters()
                  if p.is_floating_point() and not isinstance(p, UninitializedTensorMixin)),
                 None)
    return [t.to(dtype) if dtype is not None and t.is_floating_point() else t
            for t in tensors]


def _as_tensor(x: Any, device: torch.device | None = None) -> torch.Tensor:
    """An input as a tensor on ``device``: numpy and other frameworks' arrays via the host."""
    if not isinstance(x, torch.Tensor):
        array = numpy_input(x if isinstance(x, np.ndarray) or not hasattr(x, "shape")
                            else to_numpy(x))
        x = torch.from_numpy(array if array.flags.writeable else array.copy())
    return x if device is None or x.device == device or x.is_meta else x.to(device)


def _native_device(device: str) -> torch.device:
    """``"cpu:0"`` -> ``torch.device("cpu")``, ``"gpu:1"`` -> ``cuda:1``, ``"meta"``."""
    kind, _, index = device.partition(":")
    if kind in ("cpu", "meta", "mps"):
        return torch.device(kind)
    return torch.device("cuda", int(index or 0))


def _model_device(native: tnn.Module) -> torch.device | None:
    """Where the model's first parameter (else buffer) with memory is: inputs go there."""
    for tensor in (*native.parameters(), *native.buffers()):
        if not isinstance(tensor, UninitializedTensorMixin) and not tensor.is_meta \
                and not _is_dtensor(tensor):
            return tensor.device
    return None


class _Mode:
    """Context: the module in train or eval mode, restored afterwards."""

    def __init__(self, module: tnn.Module, training: bool):
        self.module, self.training = module, training
        self.saved: list[tuple[tnn.Module, bool]] = []

    def __enter__(self) -> None:
        self.saved = [(m, m.training) for m in self.module.modules()]
        self.module.train(self.training)

    def __exit__(self, *exc: Any) -> None:
        for m, flag in self.saved:
            m.training = flag
