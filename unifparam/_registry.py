"""Backend lookup: entry points (group ``unifparam.backends``), UNIFPARAM_BACKEND, install hints.

Adapters register a cheap :class:`BackendInfo` through the entry point; the framework is
imported only when the backend is asked for. Names may carry a variant after a colon,
``keras:jax``, passed on to the adapter.

    >>> from unifparam import backends
    >>> sorted(backends())            # doctest: +SKIP
    ['flax', 'keras', 'torch']
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from .errors import BackendNotFoundError, BackendNotInstalledError, BrokenBackendWarning, closest

if TYPE_CHECKING:
    from ._backend import Backend

GROUP = "unifparam.backends"
ENV = "UNIFPARAM_BACKEND"
PREFERENCE = ("torch", "keras", "flax", "mxnet")


@dataclass(frozen=True)
class BackendInfo:
    """How to find, check and load a backend without importing its framework."""

    name: str
    requires: tuple[str, ...]          # top-level modules that must be importable
    distribution: str                  # whose version `unifparam backends` reports
    native_types: tuple[str, ...]      # "module.QualName" of base classes of native models
    install: str                       # the command that installs what is missing
    loader: str                        # "package.module:BackendClass"
    variants: tuple[str, ...] = ()     # accepted after a colon, e.g. keras:jax
    #: ("module.QualName", variant): native models of this type belong to "name:variant"
    variant_types: tuple[tuple[str, str], ...] = ()

    def installed(self) -> bool:
        """True if every required module can be imported (checked without importing)."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def variant_installed(self, variant: str) -> bool:
        """True if ``variant`` can run: a variant naming a module (``keras:jax``) needs it
        importable; one naming a part of the framework (``flax:nnx`` is ``flax/nnx``) needs
        that part. Checked without importing anything."""
        if importlib.util.find_spec(variant) is not None:
            return True
        for module in self.requires:
            spec = importlib.util.find_spec(module)
            for where in (spec.submodule_search_locations or []) if spec else []:
                if os.path.exists(os.path.join(where, variant)) or \
                        os.path.exists(os.path.join(where, f"{variant}.py")):
                    return True
        return False

    def framework_version(self) -> str | None:
        """The installed framework's version, or None."""
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(self.distribution)
        except PackageNotFoundError:
            return None


_REGISTERED: dict[str, BackendInfo] = {}  # register_backend(): used before entry points


def register_backend(info: BackendInfo) -> None:
    """Register a backend by its :class:`BackendInfo`, without an installed entry point
    (an adapter on ``PYTHONPATH``, a source checkout); it replaces one of the same name.

    >>> import unifparam_torch                           # doctest: +SKIP
    >>> unifparam.register_backend(unifparam_torch.INFO)  # doctest: +SKIP
    """
    if not isinstance(info, BackendInfo):
        from .errors import ArgumentError
        raise ArgumentError(f"register_backend takes a unifparam.BackendInfo, got "
                            f"{type(info).__name__}.")
    _REGISTERED[info.name] = info
    registered.cache_clear()
    _load.cache_clear()


@cache
def registered() -> dict[str, BackendInfo]:
    """Every registered backend, by name (entry points, read once per process, and
    :func:`register_backend`)."""
    from importlib.metadata import entry_points
    found: dict[str, BackendInfo] = {}
    for ep in entry_points(group=GROUP):
        try:
            info = ep.load()
        except Exception as e:  # a broken adapter warns and is left out; it never vanishes
            warnings.warn(f"unifparam backend {ep.name!r} ({ep.value}) could not be loaded "
                          f"and is not available: {type(e).__name__}: {e}. Reinstall its "
                          f"package or remove it.", BrokenBackendWarning, stacklevel=2)
            continue
        if not isinstance(info, BackendInfo):
            warnings.warn(f"unifparam backend entry point {ep.name!r} ({ep.value}) is a "
                          f"{type(info).__name__}, not a unifparam.BackendInfo; ignored.",
                          BrokenBackendWarning, stacklevel=2)
            continue
        found[info.name] = info
    found.update(_REGISTERED)
    return dict(sorted(found.items(), key=lambda kv: (_rank(kv[0]), kv[0])))


def _rank(name: str) -> int:
    return PREFERENCE.index(name) if name in PREFERENCE else len(PREFERENCE)


def split_name(name: str) -> tuple[str, str | None]:
    """``"keras:jax"`` -> ``("keras", "jax")``."""
    base, _, variant = name.strip().lower().partition(":")
    return base, (variant or None)


def info(name: str) -> BackendInfo:
    """The registered BackendInfo for ``name``; a typed error lists what is registered."""
    base, variant = split_name(name)
    known = registered()
    if base not in known:
        have = ", ".join(f"{n}{'' if i.installed() else ' (not installed)'}"
                         for n, i in known.items()) or "none"
        raise BackendNotFoundError(
            f"Unknown backend {name!r}.{closest(base, known)} Registered backends: {have}. "
            f"Set {ENV} or pass backend= with one of these names.")
    found = known[base]
    if variant and variant not in found.variants:
        expected = (f"expected one of {', '.join(f'{base}:{v}' for v in found.variants)}"
                    if found.variants else f"it has none: use {base!r}")
        raise BackendNotFoundError(
            f"Backend {base!r} has no variant {variant!r} ({name!r}); {expected}.")
    return found


def default_name() -> str:
    """UNIFPARAM_BACKEND, else the first installed backend in the order torch, keras, flax."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return env
    for name, i in registered().items():
        if i.installed():
            return name
    from ._install import command
    raise BackendNotInstalledError(
        f"No backend is installed. Install one, e.g. {command('torch')}, "
        f"then set {ENV}. Registered: {', '.join(registered()) or 'none'}.")


@cache
def _load(base: str, variant: str | None) -> Backend:
    found = info(base)
    if not found.installed():
        from ._install import hint
        raise BackendNotInstalledError(
            f"Backend {base!r} needs {not_installed(found.requires)}. "
            f"Install it with: {hint(found.install)}")
    module, _, attr = found.loader.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(variant) if found.variants else cls()


def not_installed(modules: tuple[str, ...]) -> str:
    """``"jax, which is not installed"`` / ``"jax and flax, which are not installed"``."""
    names = [m for m in modules if importlib.util.find_spec(m) is None] or list(modules)
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{listed}, which {'is' if len(names) == 1 else 'are'} not installed"


def get_backend(name: str | None = None) -> Backend:
    """The backend adapter for ``name`` (default: :func:`default_name`), loaded once."""
    base, variant = split_name(name or default_name())
    info(f"{base}:{variant}" if variant else base)
    return _load(base, variant)


def detect(obj: Any) -> str | None:
    """The backend whose native model type ``obj`` is, judged by class names (no imports):
    ``"flax:nnx"`` when the type is one of a backend's ``variant_types``."""
    target = obj[0] if isinstance(obj, tuple) and obj else obj  # Flax (module, variables)
    mro = [f"{c.__module__}.{c.__qualname__}" for c in type(target).__mro__]
    best: tuple[int, str] | None = None
    for name, i in registered().items():
        # the most derived match wins: a Keras layer on the torch backend is also a torch Module
        kinds = [(t, name) for t in i.native_types]
        kinds += [(t, f"{name}:{v}") for t, v in i.variant_types]
        for t, found in kinds:
            if t in mro and (best is None or mro.index(t) < best[0]):
                best = (mro.index(t), found)
    return None if best is None else best[1]
