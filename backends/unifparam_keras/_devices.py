"""Keras devices in unifparam's portable names, per Keras backend (jax, torch, tensorflow).

Placement uses Keras's own ``keras.device(...)`` scope (``jax.default_device``, torch's
device, ``tf.device``); moves give each variable its value on the new device.

    >>> names("jax")                             # doctest: +SKIP
    ['cpu:0', 'cpu:1']
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

PLATFORMS = ("cpu", "gpu", "tpu")


def _jax_on(platform: str) -> list[Any]:
    import jax
    try:
        return list(jax.devices(platform))
    except RuntimeError:
        return []


def names(variant: str) -> list[str]:
    """Every device the Keras backend ``variant`` can place variables on, CPUs first."""
    if variant == "jax":
        return [f"{p}:{i}" for p in PLATFORMS for i in range(len(_jax_on(p)))]
    if variant == "torch":
        import torch
        return ["cpu:0", *(f"gpu:{i}" for i in range(torch.cuda.device_count()))]
    if variant == "tensorflow":
        import tensorflow as tf
        return [f"{kind.lower()}:{i}" for kind in ("CPU", "GPU")
                for i in range(len(tf.config.list_logical_devices(kind)))]
    return ["cpu:0"]


def default(variant: str) -> str:
    """Where Keras puts new variables: jax's first device; else the first GPU, if any."""
    if variant == "jax":
        return name_of(variant, _jax_default()) or "cpu:0"
    gpus = [n for n in names(variant) if n.startswith("gpu:")]
    return gpus[0] if gpus else "cpu:0"


def _jax_default() -> Any:
    import jax
    return jax.devices()[0]


def name_of(variant: str, device: Any) -> str | None:
    """The backend framework's own device object (or a TF device string) -> portable name."""
    if variant == "jax":
        import jax
        if not isinstance(device, jax.Device):
            return None
        platform = "gpu" if device.platform in ("cuda", "rocm") else device.platform
        same = _jax_on(platform)
        return f"{platform}:{same.index(device) if device in same else device.id}"
    if variant == "torch":
        import torch
        if not isinstance(device, torch.device):
            return None
        kind = "gpu" if device.type == "cuda" else device.type
        return f"{kind}:{device.index or 0}" if kind != "meta" else "meta"
    if variant == "tensorflow" and isinstance(device, str):
        m = re.search(r"(CPU|GPU|TPU):(\d+)$", device, re.IGNORECASE)
        return f"{m.group(1).lower()}:{m.group(2)}" if m else None
    return None


def native(variant: str, name: str) -> Any:
    """Portable name -> what ``keras.device`` takes on ``variant``."""
    kind, _, index = name.partition(":")
    if variant == "jax":
        return _jax_on(kind)[int(index or 0)]
    if variant == "torch":
        import torch
        return torch.device("cpu") if kind == "cpu" else torch.device("cuda", int(index or 0))
    return f"/{kind.upper()}:{int(index or 0)}"


@contextlib.contextmanager
def scope(variant: str, name: str | None) -> Iterator[None]:
    """``keras.device`` for a portable name (nothing for None)."""
    if name is None:
        yield
        return
    import keras
    device = native(variant, name)
    keras_name = name if variant != "jax" else device
    if variant == "torch":
        keras_name = "cuda:" + name.partition(":")[2] if name.startswith("gpu") else "cpu"
    with keras.device(keras_name):
        yield


def where(variant: str, value: Any) -> str | None:
    """Where a variable's stored value lives (None: no value yet)."""
    if value is None:
        return None
    if variant == "jax":
        import jax
        if not isinstance(value, jax.Array):  # a host buffer Keras adopted: the default device
            return default(variant) if hasattr(value, "shape") else None
        devices = sorted(value.devices(), key=lambda d: (d.platform, d.id))
        return ",".join(n for n in (name_of(variant, d) for d in devices) if n)
    if variant == "torch":
        return None if value.is_meta else name_of(variant, value.device)
    if variant == "tensorflow":
        return name_of(variant, value.device)
    return "cpu:0"


def moved(variant: str, value: Any, name: str, trainable: bool) -> Any:
    """``value`` (a variable's stored array) on device ``name``, as the variable stores it."""
    if variant == "jax":
        import jax
        return jax.device_put(value, native(variant, name))
    if variant == "torch":
        import torch
        return torch.nn.Parameter(value.detach().to(native(variant, name)),
                                  requires_grad=trainable)
    import tensorflow as tf
    with tf.device(native(variant, name)):
        return tf.Variable(tf.identity(value), trainable=trainable, name=value.name.split(":")[0])


def placed(variant: str, buffer: Any, name: str | None) -> Any:
    """A host buffer about to become a variable's value, on device ``name`` where Keras
    would keep the host buffer itself (jax); unchanged otherwise."""
    if variant != "jax" or name is None:
        return buffer
    import jax
    return jax.device_put(buffer, native(variant, name))


def to_device(variant: str, x: Any, name: str | None) -> Any:
    """A backend tensor input on device ``name``."""
    if name is None:
        return x
    if variant == "jax":
        import jax
        device = native(variant, name)
        return x if x.devices() == {device} else jax.device_put(x, device)
    if variant == "torch":
        return x.to(native(variant, name))
    return x
