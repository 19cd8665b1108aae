"""The protocol every backend adapter implements: a storage driver, no semantics.

The core owns deferred registration, re-initialization rules, ties, canonical names,
seeded values and validation; it decides *what* every parameter becomes as one
:class:`Plan` and applies it. An adapter only carries that out on its framework:

- **describe**: :meth:`Backend.build` (a spec) and :meth:`Backend.adopt` (a native model)
  name every parameter canonically and hand the core an opaque ``ref`` per parameter;
- **size**: :meth:`Backend.infer` gives an adopted model's unknown shapes by an abstract
  run (spec models never need it: the core traces their shapes);
- **store**: :meth:`Backend.allocate` (what a plan says), :meth:`Backend.status`,
  :meth:`Backend.read`, :meth:`Backend.write`, :meth:`Backend.alias`, :meth:`Backend.reset`;
- **run**: :meth:`Backend.run` and :meth:`Backend.gradients`.

Primitives that change a model take the native state and return it (state-passing), so
immutable frameworks (Flax) and mutable ones (PyTorch) share the core; the core keeps the
returned state in exactly one place (``ModelState.call``).

    >>> class Mine(unifparam.Backend):        # doctest: +SKIP
    ...     name = "mine"
    ...     def build(self, spec): ...          # one method per primitive below

``docs/backend-guide.md`` is the walk-through; the conformance suite is the test.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import nn

Shape = nn.Shape

#: Capability flags an adapter may declare; verbs check them and the conformance suite
#: marks tests that need a missing one as expected failures (never silently skipped).
CAPABILITIES = frozenset({
    "adopt",          # build() accepts the framework's own models
    "abstract",       # materialize(abstract=True) allocates no parameter memory
    "transpose_tie",  # tie(..., transpose=True)
    "gradients",      # gradients of a scalar of the output
    "native_apply",   # the framework has a module.apply-style visitor (L13)
})

DEFERRED, ABSTRACT, MATERIALIZED = "deferred", "abstract", "materialized"

#: How a planned storage gets its first values.
DEFAULT = "default"  # the framework's own default initializer, inside allocate()
WRITE = "write"      # the core writes values right after allocate(): leave it unfilled
ALIAS = "alias"      # re-pointed at another storage right after allocate(): shape only


@dataclass
class NativeParam:
    """What an adapter reports about one parameter use, in canonical terms.

    ``ref`` is opaque to the core and handed back to the adapter's primitives.
    ``storage`` identifies the native storage: two uses with equal ``storage`` are one
    parameter (a layer used twice in a native model). ``shape`` may hold ``None`` for
    sizes not known yet. ``role``/``axes`` come from :func:`unifparam.roles.classify`.
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
    """A layer of an adopted native model: canonical path, kind, children and parameters.

    ``text`` is how the layer prints; give a function where it changes (a lazy module
    prints its materialized form after its first call)."""

    path: str
    kind: str
    text: str | Callable[[], str]
    children: list[tuple[str, NativeLayer]] = field(default_factory=list)
    params: dict[str, NativeParam] = field(default_factory=dict)


@dataclass(frozen=True)
class Storage:
    """One storage a plan allocates: canonical name, ref, complete canonical shape, fill."""

    name: str
    ref: Any
    shape: tuple[int, ...]
    dtype: str
    fill: str = DEFAULT  # DEFAULT, WRITE or ALIAS
    #: With a mesh: one mesh axis name or None per canonical dimension (all None: replicated).
    shard: tuple[str | None, ...] | None = None
    #: values (numpy, canonical layout) for a DEFAULT storage the framework has no default
    #: initializer for (a torch module without ``reset_parameters``): never leave it unfilled
    fallback: Callable[[], Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Plan:
    """What :meth:`Backend.allocate` must do, decided and validated by the core.

    ``storages`` are the parameters to give storage now, in model order, each with its
    complete canonical shape (authoritative: an adapter never re-infers it). With
    ``abstract`` they get shapes and no memory. ``layer_inputs`` holds, for spec-built
    models, each leaf layer's input shape, for frameworks whose layers build from it
    (Keras ``layer.build``); adopted models have none. With a ``mesh`` (the framework's own
    mesh object) every storage has a ``shard`` and is allocated sharded.
    """

    storages: Mapping[str, Storage]
    abstract: bool = False
    layer_inputs: Mapping[str, Shape] = field(default_factory=dict)
    mesh: Any = None
    #: Where every storage gets its memory: a portable device name (``"gpu:0"``) that
    #: :meth:`Backend.devices` lists; None: the framework's default device.
    device: str | None = None


class Converters:
    """An adapter's table: spec layer class -> the function that builds its native layer.

    Adding a layer kind to an adapter is one registered function; a kind an adapter cannot
    build is a typed :class:`~unifparam.UnsupportedError` naming what it can build.

    >>> convert = Converters("mine")
    >>> @convert.register(nn.Dense)
    ... def dense(spec, *context):
    ...     return ("my dense", spec.units)
    >>> convert(nn.Dense(3))
    ('my dense', 3)
    """

    def __init__(self, backend: str,
                 table: Mapping[type[nn.Layer], Callable[..., Any]] | None = None):
        self.backend = backend
        self.table: dict[type[nn.Layer], Callable[..., Any]] = dict(table or {})

    def register(self, *classes: type[nn.Layer]) -> Callable[[Callable[..., Any]],
                                                              Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            for cls in classes:
                self.table[cls] = fn
            return fn
        return decorate

    def build(self, spec: nn.Layer, memo: dict[int, Any] | None = None, *context: Any) -> Any:
        """The native layer of ``spec``, converted once: the same spec object (a layer used
        twice) always gives the same native layer. Converters call it for their children
        with the ``memo`` they were given.

        >>> convert = Converters("mine")
        >>> @convert.register(nn.Dense)
        ... def dense(spec, memo):
        ...     return object()
        >>> shared, memo = nn.Dense(3), {}
        >>> convert.build(shared, memo) is convert.build(shared, memo)
        True
        """
        memo = {} if memo is None else memo
        if id(spec) not in memo:
            memo[id(spec)] = self(spec, memo, *context)
        return memo[id(spec)]

    def __call__(self, spec: nn.Layer, *context: Any) -> Any:
        for cls in type(spec).__mro__:
            if cls in self.table:
                return self.table[cls](spec, *context)
        from .errors import UnsupportedError
        known = ", ".join(sorted(c.__name__ for c in self.table))
        raise UnsupportedError(f"The {self.backend} backend cannot build a "
                               f"{type(spec).__name__} layer. It builds: {known}.")


class Backend(abc.ABC):
    """Base class of adapters. Subclasses set ``name``, ``capabilities`` and the primitives."""

    name: str = ""
    variant: str | None = None  # e.g. "jax" for keras:jax
    capabilities: frozenset[str] = frozenset()
    #: Canonical dtypes (:mod:`unifparam.dtypes`) the framework stores parameters in; a
    #: cast or a spec built in another is a typed UnsupportedError naming these.
    storage_dtypes: frozenset[str] = frozenset(
        {"float64", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"})
    #: a copied handle of an adopted model adopts the copied native model again (its
    #: layers do not copy along with it: Keras pickles each layer by its config)
    copy_by_adoption: bool = False

    @property
    def configuration(self) -> str:
        """``name``, or ``name:variant`` (``keras:jax``): what ``backend=`` accepts."""
        return f"{self.name}:{self.variant}" if self.variant else self.name

    # ---- describe -------------------------------------------------------------------
    @abc.abstractmethod
    def build(self, spec: nn.Layer) -> tuple[Any, dict[str, NativeParam]]:
        """Native model for ``spec``, and a NativeParam per canonical name of a first use.

        The same spec object used twice must become one native layer used twice.
        Allocate nothing whose shape the spec leaves unknown.
        """

    def adopt(self, native: Any) -> tuple[Any, NativeLayer]:
        """Describe a framework's own model: its layer tree with canonical names."""
        raise NotImplementedError

    # ---- size -----------------------------------------------------------------------
    def infer(self, native: Any, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Shape]) -> Any:
        """Adopted models: give every parameter of unknown shape an abstract shape by an
        abstract run on ``inputs`` (or inputs of ``input_shapes``); return state.

        Must not allocate parameter memory nor change values already there.
        """
        raise NotImplementedError

    def check_input(self, native: Any, inputs: Sequence[Any] | None,
                    input_shapes: Sequence[Shape]) -> None:
        """Adopted models whose every shape is known: raise
        :class:`~unifparam.InputShapeError` if the model cannot take inputs of
        ``input_shapes`` (as the framework's own ``build`` would). Default: no check."""
        return None

    def uninfer(self, native: Any) -> Any:
        """Undo the last :meth:`infer` (the plan that followed it failed): layers it sized
        are unsized again; return state. Default: nothing to undo."""
        return native

    # ---- store ----------------------------------------------------------------------
    @abc.abstractmethod
    def allocate(self, native: Any, plan: Plan) -> Any:
        """Give every storage in ``plan`` its shape, and memory unless ``plan.abstract``.

        ``DEFAULT`` storages are filled with the framework's default initializer; ``WRITE``
        ones may stay unfilled (the core writes them next); ``ALIAS`` ones need a shape only.
        Never raises for a plan the core has validated.
        """

    @abc.abstractmethod
    def status(self, native: Any, ref: Any) -> tuple[Shape | None, str]:
        """Shape (None dims unknown) and DEFERRED, ABSTRACT or MATERIALIZED, as stored now."""

    @abc.abstractmethod
    def read(self, native: Any, ref: Any) -> Any:
        """A numpy array of the value, canonical layout (a copy or a read-only view)."""

    @abc.abstractmethod
    def write(self, native: Any, ref: Any, value: Any) -> Any:
        """Store ``value`` (numpy, canonical layout, right shape and dtype); return state.

        The core hands over a fresh buffer it will not touch again: adopt it if you can.
        """

    @abc.abstractmethod
    def alias(self, native: Any, src: Any, dst: Any, transpose: bool) -> Any:
        """Make ``dst`` use ``src``'s storage (its transpose if asked); return state.

        Called only when both have storage of the same kind (both abstract or both
        materialized); idempotent.
        """

    @abc.abstractmethod
    def reset(self, native: Any, refs: Sequence[Any]) -> Any:
        """Refill ``refs`` with the framework's own default initializer; return state."""

    # ---- shard (optional: backends that take a mesh) -----------------------------------
    def mesh_axes(self, mesh: Any) -> dict[str, int]:
        """The mesh's axis names and sizes, in order; raise UnsupportedError if no mesh."""
        from .errors import UnsupportedError
        raise UnsupportedError(f"The {self.configuration} backend cannot shard parameters "
                               f"(materialize(..., mesh=) is not supported).")

    def write_sharded(self, native: Any, storage: Storage, mesh: Any,
                      block: Callable[[tuple[slice, ...]], Any]) -> Any:
        """Store ``storage`` sharded as ``storage.shard`` says over ``mesh``; return state.

        ``block(index)`` gives the canonical block ``index`` (one slice per canonical
        dimension) as numpy: call it only for the blocks this process's devices own.
        """
        raise NotImplementedError

    def owned_blocks(self, native: Any, ref: Any) -> list[tuple[tuple[slice, ...], Any]]:
        """The canonical blocks of a stored value this process writes to a checkpoint:
        ``(index, numpy block)``, the first replica of each shard. Unsharded: all of it."""
        value = self.read(native, ref)
        return [(tuple(slice(0, n) for n in value.shape), value)]

    def cast(self, native: Any, ref: Any, dtype: str) -> Any:
        """Store ``ref`` in ``dtype`` (a canonical name in :attr:`storage_dtypes`) from now
        on, values rounded to nearest even; keep its trainable flag, placement and, where
        the framework can, its object (ties by identity hold); return state. Called for
        storages that exist (abstract or materialized), never for tied uses."""
        from .errors import UnsupportedError
        raise UnsupportedError(f"The {self.configuration} backend cannot cast parameters.")

    def set_compute(self, native: Any, dtype: str | None, mixed: bool) -> Any:
        """Run the model's maths in ``dtype`` (None: as the framework promotes its inputs
        and parameters); ``mixed``: the parameters stay float32 (Keras'
        ``"mixed_bfloat16"``). Return state. The default computes in the parameters' own
        dtype and refuses mixed policies; frameworks with a mixed-precision mechanism
        (autocast, Keras dtype policies, Flax ``dtype``) implement it."""
        if not mixed:
            return native
        from .errors import UnsupportedError
        raise UnsupportedError(f"The {self.configuration} backend cannot compute in another "
                               f"dtype than its parameters' ({dtype} asked). Cast the "
                               f"parameters instead: unifparam.cast(net, {dtype!r}).")

    def dtype_of(self, native: Any, ref: Any) -> Any:
        """The dtype the framework stores ``ref`` in now (any spelling
        :func:`unifparam.dtypes.canonical` reads), or None to keep the described one. Read
        each time, so a handle stays true after the framework's own cast."""
        return None

    def trainable(self, native: Any, ref: Any) -> bool | None:
        """Whether the framework trains this parameter now (torch ``requires_grad``, Keras
        ``trainable``), read at every verb; None: as the adapter described it."""
        return None

    def structure(self, native: Any) -> Hashable | None:
        """Adopted models whose layers can be added after adoption (an NNX module's new
        attribute): a value that changes when the parameter listing would (the core then
        adopts the model again, keeping registrations). Default None: never checked."""
        return None

    def watch(self, native: Any, callback: Callable[[], None]) -> None:
        """Call ``callback()`` right after the framework itself gives parameters memory (a
        lazy layer's first native call), before that call computes: the core then applies
        the initializers registered for them. Default: no hook (the core reports skipped
        initializers at the next verb)."""
        return None

    def native_object(self, native: Any, ref: Any) -> Any:
        """The framework's own object for a parameter (torch Parameter, Keras Variable, ...)."""
        return None

    def native_layer(self, native: Any, path: str) -> Any:
        """The framework's own object for the layer at canonical ``path`` ("" = root)."""
        return native if not path else None

    # ---- devices (optional: a backend without them has one device, "cpu:0") ------------
    def devices(self) -> list[str]:
        """Portable names of the devices that exist, CPUs first: ``["cpu:0", "gpu:0"]``."""
        return ["cpu:0"]

    def default_device(self) -> str:
        """Where the framework puts new arrays when not told (portable name)."""
        return self.devices()[0]

    def placeable(self, device: str) -> bool:
        """True if parameters can live on ``device`` (a portable name); default: listed."""
        return device in self.devices()

    def device_name(self, device: Any) -> str | None:
        """The portable name of one of the framework's own device objects (None: not one)."""
        return None

    def native_device(self, device: str) -> Any:
        """The framework's own object for a portable device name (one ``placeable``)."""
        return device

    def device_of(self, native: Any, ref: Any) -> str | None:
        """Where a stored value lives (portable name; comma-joined for a value spread over
        several devices), or None while it has no memory."""
        return self.default_device() if self.status(native, ref)[1] == MATERIALIZED else None

    def move(self, native: Any, device: str) -> Any:
        """Move every value of the model (parameters and buffers) to ``device``, keeping
        each parameter's identity for its ties, its trainable flag and dtype; return state."""
        from .errors import UnsupportedError
        raise UnsupportedError(f"The {self.configuration} backend cannot move parameters "
                               f"between devices.")

    # ---- run ------------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, native: Any, inputs: Sequence[Any], training: bool) -> tuple[Any, Any]:
        """``(output, state)`` of the model on numpy or native inputs.

        In training mode the state carries updated statistics (batch norm).
        """

    def gradients(self, native: Any, inputs: Sequence[Any], loss: Callable[[Any], Any] | None,
                  refs: Mapping[str, Any], training: bool = False) -> dict[str, Any]:
        """Gradient of ``loss(output)`` for every name in ``refs``, as numpy; without ``loss``,
        of :func:`default_loss` of the output. ``training``: the forward pass in the
        framework's training mode (dropout, batch statistics, running statistics updated as
        in ``run(..., training=True)``); the core passes it only when True, and then takes
        ``(gradients, native)``: the native state after the step, as ``run`` returns it."""
        raise NotImplementedError

    def to_numpy(self, value: Any) -> Any:
        """A native array as numpy (detached, on the host; a torch DTensor gathered):
        :func:`unifparam.to_numpy`, which knows torch, MXNet, TensorFlow and jax arrays."""
        from ._convert import to_numpy
        return to_numpy(value)


# ---- the default objective of gradients ---------------------------------------------------
def output_leaves(output: Any) -> list[Any]:
    """The arrays in a model output, in order: the output itself, or those nested in its
    mappings (transformers' ``ModelOutput``, keras_hub's dicts), lists and tuples. Objects
    that are neither (a key-value cache, None, strings) hold no leaves.

    >>> import numpy as np
    >>> [a.shape for a in output_leaves({"logits": np.ones((2, 3)), "aux": [np.ones(1), None]})]
    [(2, 3), (1,)]
    """
    if hasattr(output, "shape") and hasattr(output, "dtype"):
        return [output]
    if isinstance(output, Mapping):
        items = list(output.values())
    elif isinstance(output, (list, tuple)):
        items = list(output)
    else:
        return []
    return [leaf for item in items for leaf in output_leaves(item)]


def default_loss(output: Any, total: Callable[[Any], Any], is_float: Callable[[Any], bool]
                 ) -> Any:
    """What ``gradients`` differentiates without ``loss=``: the sum of every floating-point
    leaf of ``output`` (see :func:`output_leaves`). Adapters pass their framework's ``total``
    (sum of one array) and ``is_float``. Raises :class:`~unifparam.OutputError` when no
    leaf is floating point (token ids only, no output at all).

    >>> import numpy as np
    >>> float(default_loss({"a": np.ones(2), "ids": np.arange(3)}, np.sum,
    ...                    lambda x: x.dtype.kind == "f"))
    2.0
    """
    leaves = output_leaves(output)
    floats = [leaf for leaf in leaves if is_float(leaf)]
    if not floats:
        from .errors import OutputError
        found = ", ".join(str(getattr(leaf, "dtype", "?")) for leaf in leaves[:4]) or "none"
        raise OutputError(
            f"gradients needs a floating-point output to differentiate; the model returned a "
            f"{type(output).__name__} whose arrays have dtypes: {found}. Pass "
            f"loss=lambda out: ... returning a scalar of the output.")
    value = total(floats[0])
    for leaf in floats[1:]:
        value = value + total(leaf)
    return value
