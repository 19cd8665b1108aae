"""The PyTorch backend: unifparam's primitives on torch modules.

References to parameters are ``(module, attribute)`` pairs, so they stay valid when a
lazy module turns into its eager class or a tensor is replaced (meta -> to_empty).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn as tnn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin
from torch.nn.utils import parametrize

from unifparam import Backend, NativeParam, Plan, nn
from unifparam._backend import ABSTRACT, ALIAS, DEFAULT, DEFERRED, MATERIALIZED

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
        """Adopted models: run the forward pass on meta tensors (no memory, no values)."""
        for module in native.modules():
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
                _uninitialized_to_meta(module)
        metas = {n: torch.empty_like(t, device="meta") for n, t in
                 [*native.named_parameters(remove_duplicate=False),
                  *native.named_buffers(remove_duplicate=False)]
                 if not isinstance(t, UninitializedTensorMixin) and not t.is_meta}
        if inputs is not None:
            args = [_as_tensor(x).to("meta") for x in inputs]
        else:
            args = [torch.empty(tuple(s), device="meta") for s in input_shapes]
        with _eval(native), torch.no_grad():
            torch.func.functional_call(native, metas, tuple(args), strict=False)
        return native

    def allocate(self, native: tnn.Module, plan: Plan) -> tnn.Module:
        """Lazy spec layers learn their input size (a meta input); then planned tensors get
        CPU memory, filled by the module's ``reset_parameters`` where the plan says DEFAULT.
        Tensors the core writes next stay on meta: ``write`` adopts the core's buffer."""
        for path, shape in plan.layer_inputs.items():
            module = native.get_submodule(path) if path else native
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
                _uninitialized_to_meta(module)
                module._infer_parameters(module, (torch.empty(tuple(shape), device="meta"),))
        for storage in plan.storages.values():  # a block's own parameters of unknown size
            module, attr = storage.ref
            tensor = getattr(module, attr)
            if isinstance(tensor, UninitializedTensorMixin):
                _store(module, attr, _like(tensor, torch.empty(storage.shape, device="meta")))
        if plan.abstract:
            return native
        fresh: dict[int, tuple[tnn.Module, list[str]]] = {}
        for storage in plan.storages.values():
            module, attr = storage.ref
            tensor = getattr(module, attr)
            if not tensor.is_meta or storage.fill not in (DEFAULT, ALIAS):
                continue
            _store(module, attr, _like(tensor, torch.empty_like(tensor, device="cpu")))
            if storage.fill == DEFAULT:
                fresh.setdefault(id(module), (module, []))[1].append(attr)
        for module, attrs in fresh.values():
            _fill_defaults(module, attrs)
        return native

    def status(self, native: tnn.Module, ref: Ref) -> tuple[tuple[int | None, ...] | None, str]:
        module, attr = ref
        tensor = getattr(module, attr)
        if isinstance(tensor, UninitializedTensorMixin):
            return None, DEFERRED
        return tuple(tensor.shape), (ABSTRACT if tensor.is_meta else MATERIALIZED)

    def read(self, native: tnn.Module, ref: Ref) -> np.ndarray:
        return getattr(ref[0], ref[1]).detach().cpu().numpy()

    def write(self, native: tnn.Module, ref: Ref, value: np.ndarray) -> tnn.Module:
        tensor = getattr(ref[0], ref[1])
        source = torch.from_numpy(np.ascontiguousarray(value))
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
            if not hasattr(module, "reset_parameters"):
                continue  # no framework default known: values stay as they are
            others = {k: t.detach().clone() for k, t in
                      [*module._parameters.items(), *module._buffers.items()]
                      if t is not None and k not in attrs}
            module.reset_parameters()
            with torch.no_grad():
                for k, t in others.items():
                    getattr(module, k).copy_(t)
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

    def native_object(self, native: tnn.Module, ref: Ref) -> Any:
        return getattr(ref[0], ref[1])

    def native_layer(self, native: tnn.Module, path: str) -> tnn.Module:
        return native.get_submodule(path) if path else native

    # ---- compute -------------------------------------------------------------------
    def run(self, native: tnn.Module, inputs: Sequence[Any], training: bool
            ) -> tuple[Any, tnn.Module]:
        with _Mode(native, training):
            return native(*(_as_tensor(x) for x in inputs)), native

    def gradients(self, native: tnn.Module, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Ref]) -> dict[str, Any]:
        tensors = [getattr(m, a) for m, a in refs.values()]
        with _Mode(native, False), torch.enable_grad():
            out = native(*(_as_tensor(x) for x in inputs))
            value = loss(out) if loss is not None else out.sum()
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        return {n: (np.zeros(tuple(t.shape), np.float32) if g is None else g.detach().numpy())
                for n, t, g in zip(refs, tensors, grads)}

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return np.asarray(value)


def _like(template: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """``data`` as the same kind of tensor as ``template`` (Parameter or buffer)."""
    if isinstance(template, tnn.Parameter):
        return tnn.Parameter(data, requires_grad=template.requires_grad)
    return data


def _store(module: tnn.Module, attr: str, tensor: torch.Tensor) -> None:
    (module._parameters if attr in module._parameters else module._buffers)[attr] = tensor


def _fill_defaults(module: tnn.Module, attrs: list[str]) -> None:
    """The module's own default values for ``attrs`` (its other tensors kept as they are)."""
    if hasattr(module, "reset_parameters"):
        keep = {k: t.detach().clone() for k, t in
                [*module._parameters.items(), *module._buffers.items()]
                if t is not None and k not in attrs and not t.is_meta}
        module.reset_parameters()  # meta tensors left in it are no-ops
        with torch.no_grad():
            for k, t in keep.items():
                getattr(module, k).copy_(t)
    elif hasattr(module, "reset_running_stats"):
        module.reset_running_stats()


def _uninitialized_to_meta(module: tnn.Module) -> None:
    """Point a lazy module's uninitialized tensors at the meta device (no memory later)."""
    for k, p in module._parameters.items():
        if isinstance(p, UninitializedParameter):
            module._parameters[k] = UninitializedParameter(p.requires_grad, "meta", p.dtype)
    for k, b in module._buffers.items():
        if isinstance(b, UninitializedBuffer):
            module._buffers[k] = UninitializedBuffer(b.requires_grad, "meta", b.dtype)


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(arr))


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


def _eval(module: tnn.Module) -> _Mode:
    return _Mode(module, False)
