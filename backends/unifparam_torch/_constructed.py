"""Buffers only a module's constructor computes, recomputed when a meta-built model materializes.

Non-persistent buffers (a rotary embedding's ``inv_freq``, BERT's ``position_ids`` and
``token_type_ids``, Gemma's ``embed_scale``, Swin's ``relative_position_index``) and integer
buffers are not parameters: ``state_dict`` does not save them and unifparam does not list
them. Built under ``torch.device("meta")`` they hold no values, so materializing must give
them the values the eagerly built model has, or fail naming them:

- a Hugging Face model (any ancestor with ``_init_weights`` and a ``config``) recomputes them
  the way ``from_pretrained`` does, with its ``_init_weights(module)`` (the module's other
  tensors keep their values);
- a counter of a module with ``reset_running_stats`` (BatchNorm's ``num_batches_tracked``)
  starts at zero;
- any other raises :class:`~unifparam.UnsupportedError` naming the buffer.

    >>> values = recompute(model, listed=set())   # doctest: +SKIP
    >>> install(values)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import torch
from torch import nn as tnn
from torch.nn.parameter import UninitializedTensorMixin

from unifparam.errors import UnsupportedError, fmt_names

Key = tuple[tnn.Module, str]


def meta_buffers(native: tnn.Module, listed: Collection[Key]) -> Iterator[tuple[str, Key, Any]]:
    """(name, (module, attr), owner) of every meta buffer the plan does not fill; ``owner`` is
    the nearest Hugging Face model above the module (None if there is none)."""
    seen: set[int] = set()
    skip = {(id(m), a) for m, a in listed}

    def walk(module: tnn.Module, path: str, owner: Any) -> Iterator[tuple[str, Key, Any]]:
        if id(module) in seen:
            return
        seen.add(id(module))
        if callable(getattr(module, "_init_weights", None)) and hasattr(module, "config"):
            owner = module
        for attr, b in module._buffers.items():
            if b is not None and b.is_meta and not isinstance(b, UninitializedTensorMixin) \
                    and (id(module), attr) not in skip:
                yield (f"{path}.{attr}" if path else attr), (module, attr), owner
        for key, child in module._modules.items():
            if child is not None:
                yield from walk(child, f"{path}.{key}" if path else key, owner)

    yield from walk(native, "", None)


def recompute(native: tnn.Module, listed: Collection[Key]) -> dict[Key, torch.Tensor]:
    """CPU values of every meta buffer outside ``listed``; the model is left as it was.
    Raises UnsupportedError naming the buffers nothing can recompute."""
    found = list(meta_buffers(native, listed))
    values: dict[Key, torch.Tensor] = {}
    by_module: dict[int, tuple[tnn.Module, Any, list[tuple[str, str]]]] = {}
    for name, (module, attr), owner in found:
        if attr == "num_batches_tracked" and hasattr(module, "reset_running_stats"):
            values[(module, attr)] = torch.zeros((), dtype=module._buffers[attr].dtype)
        elif owner is not None:
            by_module.setdefault(id(module), (module, owner, []))[2].append((name, attr))
    missing = [name for name, key, _ in found if key not in values and
               not any(key[0] is m for m, _, _ in by_module.values())]
    for module, owner, attrs in by_module.values():
        got, why = _from_init_weights(module, owner, [a for _, a in attrs])
        values.update({(module, a): v for a, v in got.items()})
        missing += [f"{name}{why}" for name, a in attrs if a not in got]
    if missing:
        raise unfilled(missing, "nothing recomputes them", "give them values before "
                       "materialize (module.register_buffer(name, value, persistent=False)). "
                       "Nothing was changed")
    return values


def unfilled(names: list[str], why: str, fix: str) -> UnsupportedError:
    """The error for meta buffers without values: not parameters (not saved, or not floating
    point), their values come from their module's constructor."""
    return UnsupportedError(
        f"Buffers {fmt_names(names, 4)} are on the meta device and {why}: they are not "
        f"parameters (not saved, or not floating point), their values come from their "
        f"module's constructor. Build those modules outside torch.device('meta'), or {fix}.")


def install(values: dict[Key, torch.Tensor]) -> None:
    """Put recomputed buffers in their modules (they replace the meta tensors)."""
    for (module, attr), value in values.items():
        module._buffers[attr] = value


def _from_init_weights(module: tnn.Module, owner: Any, attrs: list[str]
                       ) -> tuple[dict[str, torch.Tensor], str]:
    """What ``owner._init_weights(module)`` writes into ``attrs`` (fresh CPU tensors), the
    module restored afterwards; and why not, when it raises."""
    tensors = {**module._parameters, **module._buffers}
    kept = {k: t.detach().clone() for k, t in tensors.items()
            if t is not None and k not in attrs and not t.is_meta}
    fresh = {a: torch.empty(module._buffers[a].shape, dtype=module._buffers[a].dtype)
             for a in attrs}
    for t in fresh.values():
        if t.is_floating_point():
            t.fill_(float("nan"))
    versions = {a: t._version for a, t in fresh.items()}
    params, buffers = dict(module._parameters), dict(module._buffers)
    module._buffers.update(fresh)
    why = ""
    try:
        with torch.no_grad():
            owner._init_weights(module)
    except Exception as e:  # noqa: BLE001 - any failure means: not recomputed
        why = f" ({type(owner).__name__}._init_weights raised {type(e).__name__}: {e})"
    finally:
        now = dict(module._buffers)
        module._parameters.clear()
        module._parameters.update(params)
        module._buffers.clear()
        module._buffers.update(buffers)
        with torch.no_grad():
            for k, t in kept.items():
                getattr(module, k).copy_(t)
    got = {}
    for a in attrs:
        t = now.get(a)
        written = t is not fresh[a] or t._version != versions[a]
        if not why and t is not None and not t.is_meta and written:
            got[a] = t
    return got, why


def owners(native: tnn.Module) -> dict[int, Any]:
    """id(module) -> the nearest Hugging Face model at or above it (modules under none are
    left out): the model whose ``_init_weights`` is that module's framework default."""
    out: dict[int, Any] = {}

    def walk(module: tnn.Module, owner: Any) -> None:
        if id(module) in out:
            return
        if callable(getattr(module, "_init_weights", None)) and hasattr(module, "config"):
            owner = module
        if owner is not None:
            out[id(module)] = owner
        for child in module._modules.values():
            if child is not None:
                walk(child, owner)

    walk(native, None)
    return out


def hf_defaults(module: tnn.Module, owner: Any, attrs: Collection[str]) -> set[str]:
    """Fill ``attrs`` (fresh CPU tensors of ``module``) as the eagerly built Hugging Face model
    fills them: ``owner._init_weights(module)`` (a Linear's normal(initializer_range), Marian's
    sinusoidal table), the module's other tensors kept. Returns the attrs it wrote."""
    tensors = {**module._parameters, **module._buffers}
    kept = {k: t.detach().clone() for k, t in tensors.items()
            if t is not None and k not in attrs and not t.is_meta}
    versions = {a: (tensors[a], tensors[a]._version) for a in attrs}
    try:
        with torch.no_grad():
            owner._init_weights(module)
    except Exception:  # noqa: BLE001 - then torch's own default fills them
        return set()
    finally:
        with torch.no_grad():
            for k, t in kept.items():
                getattr(module, k).copy_(t)
    return {a for a, (t, v) in versions.items()
            if getattr(module, a) is t and t._version != v}
