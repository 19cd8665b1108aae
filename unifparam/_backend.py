"""The protocol every backend adapter implements: small primitives, no semantics.

The core (``_model.py``, ``_verbs.py``) owns deferred registration, re-initialization rules,
tie bookkeeping, canonical names and seeded values. An adapter only translates between a
framework and canonical parameters. Primitives are written in state-passing style: the
ones that change a model take the native state and return the (possibly new) native
state, so that immutable frameworks (Flax) and mutable ones (PyTorch) share the core.

A minimal adapter::

    class Backend(unifparam.Backend):
        name = "mine"
        def build(self, spec): ...
        # ... one method per primitive below

See ``docs/backend-guide.md`` for the walk-through and the conformance suite.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import nn

Shape = tuple[int | None, ...]

#: Capability flags an adapter may declare; the conformance suite marks tests that need a
#: missing one as expected failures, so a gap is visible, never silently skipped.
CAPABILITIES = frozenset({
    "adopt",          # build() accepts the framework's own models
    "abstract",       # materialize(abstract=True) allocates no parameter memory
    "transpose_tie",  # tie(..., transpose=True)
    "gradients",      # gradients of a scalar of the output
    "native_apply",   # the framework has a module.apply-style visitor (L13)
})

DEFERRED, ABSTRACT, MATERIALIZED = "deferred", "abstract", "materialized"


@dataclass
class NativeParam:
    """What an adapter reports about one parameter use, in canonical terms.

    ``ref`` is opaque to the core and handed back to the adapter's primitives.
    ``storage`` identifies the native storage: two uses with equal ``storage`` are one
    parameter (a layer used twice in a native model).
    """

    name: str
    ref: Any
    shape: Shape | None
    role: str = "weight"
    axes: tuple[str, ...] | None = None
    trainable: bool = True
    dtype: str = "float32"
    native_name: str = ""
    storage: Hashable | None = None


@dataclass
class NativeLayer:
    """A layer of an adopted native model: canonical path, kind, children and parameters."""

    path: str
    kind: str
    text: str
    children: list[tuple[str, NativeLayer]] = field(default_factory=list)
    params: dict[str, NativeParam] = field(default_factory=dict)


@dataclass(frozen=True)
class Materialization:
    """What the core asks of ``Backend.materialize``.

    ``inputs`` are example inputs (numpy or native) or ``None`` when only ``input_shapes``
    are known. For spec-built models the core has already traced every shape:
    ``layer_inputs`` maps each leaf layer path to its input shape and ``param_shapes``
    each canonical parameter name (first uses only) to its shape. ``skip_defaults`` names
    parameters the core will overwrite at once, so the adapter may leave them unfilled.
    """

    inputs: tuple[Any, ...] | None
    input_shapes: tuple[Shape, ...]
    abstract: bool = False
    layer_inputs: Mapping[str, Shape] | None = None
    param_shapes: Mapping[str, Shape] | None = None
    skip_defaults: frozenset[str] = frozenset()


class Backend(abc.ABC):
    """Base class of adapters. Subclasses set ``name``, ``capabilities`` and the primitives."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()

    # ---- construction ---------------------------------------------------------------
    @abc.abstractmethod
    def build(self, spec: nn.Layer) -> tuple[Any, dict[str, NativeParam]]:
        """Native model for ``spec``, and a NativeParam per canonical name of a first use.

        The same spec object used twice must become one native layer used twice.
        """

    def adopt(self, native: Any) -> tuple[Any, NativeLayer]:
        """Describe a framework's own model: its layer tree with canonical names."""
        raise NotImplementedError

    # ---- shapes and storage -------------------------------------------------------------
    @abc.abstractmethod
    def materialize(self, native: Any, request: Materialization) -> Any:
        """Infer every shape; allocate storage unless ``request.abstract``; return state.

        Parameters that get storage are filled with the framework's default initializer
        (except ``request.skip_defaults``). Must not raise for a request whose shapes the
        core has validated.
        """

    @abc.abstractmethod
    def status(self, native: Any, ref: Any) -> tuple[Shape | None, str]:
        """Canonical shape (None dims unknown) and DEFERRED, ABSTRACT or MATERIALIZED."""

    @abc.abstractmethod
    def read(self, native: Any, ref: Any) -> Any:
        """A numpy array of the value, canonical layout (a copy or a read-only view)."""

    @abc.abstractmethod
    def write(self, native: Any, ref: Any, value: Any) -> Any:
        """Store ``value`` (numpy, canonical layout, right shape and dtype); return state."""

    @abc.abstractmethod
    def share(self, native: Any, src: Any, dst: Any, transpose: bool) -> Any:
        """Make ``dst`` use ``src``'s storage (its transpose if asked); return state.

        Called only when both are materialized or both abstract; idempotent.
        """

    @abc.abstractmethod
    def reset(self, native: Any, refs: Sequence[Any]) -> Any:
        """Refill ``refs`` with the framework's own default initializer; return state."""

    def native_object(self, native: Any, ref: Any) -> Any:
        """The framework's own object for a parameter (torch Parameter, Keras Variable, ...)."""
        return None

    def native_layer(self, native: Any, path: str) -> Any:
        """The framework's own object for the layer at canonical ``path`` ("" = root)."""
        return native if not path else None

    # ---- compute -------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, native: Any, inputs: Sequence[Any], training: bool) -> Any:
        """Run the model on numpy or native inputs; return the native output."""

    def forward_with_state(self, native: Any, inputs: Sequence[Any], training: bool
                           ) -> tuple[Any, Any]:
        """``(output, state)``: for frameworks whose forward pass returns new state (Flax
        ``batch_stats`` in training mode). The default runs :meth:`forward`, state unchanged.
        """
        return self.forward(native, inputs, training), native

    def gradients(self, native: Any, inputs: Sequence[Any], loss: Callable[[Any], Any] | None,
                  refs: Mapping[str, Any]) -> dict[str, Any]:
        """Gradient of ``loss(output)`` (default: the sum) for every name in ``refs``, as numpy."""
        raise NotImplementedError

    def to_numpy(self, value: Any) -> Any:
        """A native array as numpy."""
        import numpy as np
        return np.asarray(value)
