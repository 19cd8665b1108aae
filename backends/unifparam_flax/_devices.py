"""JAX devices in unifparam's portable names (``"cpu:3"``, ``"gpu:0"``), for linen and NNX.

A portable index is the device's position in ``jax.devices(platform)``. Values placed on a
device are committed there (``jax.device_put`` with a ``SingleDeviceSharding``); inputs go
to the model's device.

    >>> names()                                  # doctest: +SKIP
    ['cpu:0', 'cpu:1', 'gpu:0']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from unifparam.backend import numpy_input, to_numpy

PLATFORMS = ("cpu", "gpu", "tpu")


def _on(platform: str) -> list[Any]:
    try:
        return list(jax.devices(platform))
    except RuntimeError:  # no such platform in this jax
        return []


def names() -> list[str]:
    """Every device jax has, CPUs first, as portable names."""
    return [f"{p}:{i}" for p in PLATFORMS for i in range(len(_on(p)))]


def name_of(device: Any) -> str | None:
    """``jax.Device`` -> portable name (None for anything else)."""
    if not isinstance(device, jax.Device):
        return None
    platform = "gpu" if device.platform in ("cuda", "rocm") else device.platform
    same = _on(platform)
    return f"{platform}:{same.index(device) if device in same else device.id}"


def native(name: str) -> Any:
    """Portable name -> ``jax.Device`` (the name must be one of :func:`names`)."""
    platform, _, index = name.partition(":")
    return _on(platform)[int(index or 0)]


def default() -> str:
    return name_of(jax.devices()[0]) or "cpu:0"


def sharding(name: str | None) -> Any:
    """The single-device sharding placing a value on ``name`` (None: the default device)."""
    return None if name is None else jax.sharding.SingleDeviceSharding(native(name))


def default_scope(name: str | None) -> Any:
    """A context in which new jax arrays go to ``name`` (nothing for None, or a jax
    without ``jax.default_device``: values are then placed by ``device_put`` only)."""
    scope = getattr(jax, "default_device", None)
    return contextlib.nullcontext() if name is None or scope is None else scope(native(name))


def where(value: Any) -> str | None:
    """Where an array lives (comma-joined for a sharded one); None for a placeholder."""
    if not isinstance(value, jax.Array):
        return None
    devices = sorted(value.devices(), key=lambda d: (d.platform, d.id))
    return ",".join(n for n in (name_of(d) for d in devices) if n)


def placement(value: Any) -> Any:
    """The sharding a write into ``value`` keeps: a placeholder's planned one, a committed
    array's own; None (the default device) otherwise."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return getattr(value, "sharding", None)
    if isinstance(value, jax.Array) and getattr(value, "committed", False):
        return value.sharding
    return None


def placed(value: Any, device: str | None) -> Any:
    """A placeholder carrying ``device`` (kept if it already has a placement)."""
    if device is None or not isinstance(value, jax.ShapeDtypeStruct) or \
            getattr(value, "sharding", None) is not None:
        return value
    return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding(device))


def move(value: Any, device: str) -> Any:
    """An array on ``device``; a placeholder stays (its storage is planned later)."""
    return jax.device_put(value, native(device)) if isinstance(value, jax.Array) else value


def model_device(values: Iterable[Any]) -> Any:
    """The device of the first committed single-device array: where inputs go."""
    for value in values:
        if isinstance(value, jax.Array) and getattr(value, "committed", False) and \
                len(value.devices()) == 1:
            return next(iter(value.devices()))
    return None


def as_input(x: Any, device: Any = None) -> Any:
    """A model input as a jax array (floats float32, integers int32) on ``device``: numpy
    and other frameworks' arrays (a torch tensor, on any device) through the host."""
    import jax.numpy as jnp
    if not isinstance(x, jax.Array):
        if hasattr(x, "shape") and not isinstance(x, np.ndarray):
            x = to_numpy(x)
        x = jnp.asarray(numpy_input(x, "int32"))
    if device is not None and x.devices() != {device}:
        x = jax.device_put(x, device)
    return x


class JaxDevices:
    """The device primitives linen and NNX share: jax's devices under portable names."""

    def devices(self) -> list[str]:
        return names()

    def default_device(self) -> str:
        return default()

    def device_name(self, device: Any) -> str | None:
        return name_of(device)

    def native_device(self, device: str) -> Any:
        return native(device)
