"""Which backend runs the forward now: the one context a block's ``forward`` reads.

An adapter running a :class:`unifparam.nn.Block` sets a :class:`Binding` for the duration
of its ``forward``: spec layers called inside it run as the adapter's native layers, a
block's parameters read as native tensors and :mod:`unifparam.ops` use the adapter's
array namespace. The core's shape trace is one more binding (numpy).

    >>> current() is None
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any


class Binding:
    """Base of the bindings adapters set. Subclasses set ``namespace`` and/or ``ops``, and
    the two lookups.

    An op is looked up in ``ops`` first, then in ``namespace``: an array namespace with the
    Python array API's names and signatures (``jax.numpy``, ``array_api_compat.torch``), so
    an adapter lists only what its namespace lacks (``relu``, ``sigmoid``, ``gelu``,
    ``softmax``, which the standard leaves out).
    """

    #: an array-API namespace (``transpose`` is its ``permute_dims``); None: ``ops`` only
    namespace: Any = None
    #: op name (``"matmul"``) -> function taking and returning native arrays
    ops: Mapping[str, Callable[..., Any]] = {}

    @classmethod
    def activation(cls, name: str | None) -> Callable[[Any], Any]:
        """The native function of a spec activation (``nn.Dense(activation=...)``): the
        binding's op of that name; None or ``"identity"`` is the identity.

        >>> class Numpyish(Binding):
        ...     ops = {"relu": lambda x: max(x, 0)}
        >>> Numpyish.activation("relu")(-2), Numpyish.activation(None)(-2)
        (0, -2)
        """
        if name in (None, "identity"):
            return _identity
        return cls.ops[name] if name in cls.ops else getattr(cls.namespace, name)

    def call_layer(self, layer: Any, args: tuple[Any, ...]) -> Any:
        """Run spec ``layer`` on native ``args`` as this backend's layer."""
        raise NotImplementedError

    def param(self, block: Any, name: str) -> Any:
        """Block ``block``'s parameter ``name`` as a native array."""
        raise NotImplementedError


def _identity(x: Any) -> Any:
    return x


_current: ContextVar[Binding | None] = ContextVar("unifparam_binding", default=None)
_guard: ContextVar[Callable[[Any, tuple[Any, ...]], None] | None] = ContextVar(
    "unifparam_guard", default=None)


def guard() -> Callable[[Any, tuple[Any, ...]], None] | None:
    """What every spec layer call checks first while a first call sizes layers (None
    otherwise): it may stop the forward to size the layer (see ``unifparam._firstcall``)."""
    return _guard.get()


@contextlib.contextmanager
def guarded(check: Callable[[Any, tuple[Any, ...]], None]) -> Iterator[None]:
    """Run the body with ``check`` called on every spec layer call."""
    token = _guard.set(check)
    try:
        yield
    finally:
        _guard.reset(token)


def current() -> Binding | None:
    """The binding of the forward running now (None outside any)."""
    return _current.get()


@contextlib.contextmanager
def bound(binding: Binding | None) -> Iterator[Binding | None]:
    """Run the body with ``binding`` as the current one (None: none; restored afterwards)."""
    token = _current.set(binding)
    try:
        yield binding
    finally:
        _current.reset(token)
