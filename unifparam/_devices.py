"""Devices: which exist, where parameters are, placing and moving them, in one spelling.

A device has a portable name ``"kind:index"``: ``"cpu:0"``, ``"gpu:1"`` (CUDA or ROCm),
``"tpu:0"``, and torch's ``"meta"`` (shapes, no memory). Users may type ``"cpu"``,
``"gpu"``, ``"cuda:0"`` or pass the framework's own device object (``torch.device``,
``jax.Device``, ``mx.gpu(0)``); adapters translate names to their framework's objects.

    >>> up.devices("torch")                       # doctest: +SKIP
    ['cpu:0']
    >>> up.num_gpus("torch")                      # doctest: +SKIP
    0
    >>> parse("cuda")
    'gpu:0'
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError, ArgumentValueError, DeviceError

if TYPE_CHECKING:
    from ._backend import Backend

#: what users type -> the portable kind
KINDS = {"cpu": "cpu", "host": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu",
         "tpu": "tpu", "mps": "mps", "meta": "meta"}
_NAME = re.compile(r"^\s*([a-z]+)\s*(?::\s*(\d+))?\s*$")


def parse(device: str) -> str:
    """A device name as typed (``"cpu"``, ``"GPU:1"``, ``"cuda:0"``) in portable form.

    >>> parse("cpu"), parse("gpu:1"), parse("cuda:0"), parse("meta")
    ('cpu:0', 'gpu:1', 'gpu:0', 'meta')
    """
    m = _NAME.match(device.lower())
    if m is None or m.group(1) not in KINDS:
        raise ArgumentValueError(
            f"Device {device!r} is not a device name. Use 'cpu', 'gpu', 'gpu:1', 'cuda:0' "
            f"(or the framework's own device object); unifparam.devices() lists them.")
    kind = KINDS[m.group(1)]
    if kind == "meta":
        return "meta"
    return f"{kind}:{int(m.group(2) or 0)}"


def name_of(backend: Backend, device: Any) -> str:
    """The portable name of ``device`` (a name or ``backend``'s own device object)."""
    if isinstance(device, str):
        try:
            return parse(device)
        except ArgumentValueError:  # a framework's own spelling ('/device:GPU:0')?
            found = backend.device_name(device)
            if found is None:
                raise
            return found
    found = backend.device_name(device)
    if found is None:
        raise ArgumentError(f"device={device!r}: expected a device name such as 'cpu' or "
                            f"'gpu:0', or a {backend.configuration} device object, got "
                            f"{type(device).__module__}.{type(device).__qualname__}.")
    return found


def check(backend: Backend, device: Any) -> str:
    """``device``'s portable name, if parameters can be placed there; else a typed
    :class:`~unifparam.DeviceError` naming it and the devices that exist."""
    name = name_of(backend, device)
    if not backend.placeable(name):
        have = ", ".join(backend.devices())
        hint = " Without a GPU, use 'cpu'." if name.startswith("gpu") else ""
        given = "" if device == name else f" (given as {device!r})"
        raise DeviceError(f"Device {name!r}{given} does not exist for the "
                          f"{backend.configuration} backend; it has: {have}.{hint} Nothing was "
                          f"changed.")
    return name


def _backend_of(backend: Any) -> Backend:
    from ._backend import Backend
    from ._model import Model
    from ._registry import get_backend
    if isinstance(backend, Model):
        return backend._st.backend
    if backend is None or isinstance(backend, str):
        return get_backend(backend)
    if isinstance(backend, Backend):
        return backend
    raise ArgumentError(f"Expected a backend name such as 'torch' (or a model), got "
                        f"{type(backend).__name__}.")


def devices(backend: Any = None) -> list[str]:
    """The devices parameters can be placed on, CPUs first, for ``backend`` (a name, a
    model, or None: the default backend): ``['cpu:0', 'gpu:0', 'gpu:1']``.

    >>> unifparam.devices("flax")                 # doctest: +SKIP
    ['cpu:0']
    """
    return list(_backend_of(backend).devices())


def num_gpus(backend: Any = None) -> int:
    """How many GPUs ``backend``'s framework sees (the book's ``num_gpus()``).

    >>> unifparam.num_gpus()                      # doctest: +SKIP
    0
    """
    return sum(d.startswith("gpu:") for d in devices(backend))
