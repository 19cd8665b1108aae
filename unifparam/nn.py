"""Framework-neutral layer specs: what a model is, not how a framework stores it.

A spec never holds values. Any input size may be left out; it is inferred at
materialization. The same spec object used twice shares its parameters (the D2L way
of tying)::

    >>> from unifparam import nn
    >>> shared = nn.Dense(8, activation="relu")
    >>> net = nn.Sequential(nn.Dense(8, activation="relu"), shared, shared, nn.Dense(1))
    >>> net[1] is net[2]
    True

Data layout is channels-first, as in PyTorch and Gluon: images are ``(N, C, H, W)``.
Parameter layout is canonical: dense weights ``(out, in)``, conv weights
``(out, in, kh, kw)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputShapeError, SpecCycleError, SpecError, SpecTypeError, fmt_shape

Shape = tuple[int | None, ...]
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "softmax", "identity")


@dataclass(frozen=True)
class ParamDecl:
    """One parameter a layer declares: local name, shape (None = unknown), logical axes."""

    name: str
    shape: Shape
    axes: tuple[str, ...]
    role: str  # weight | bias | embedding | scale | shift | running_mean | running_var
    trainable: bool = True
    init: Any = None  # an unifparam.init initializer given at construction (P13, P14)


#: Every spec layer class by kind (``"Dense"``), filled as classes are defined: the one
#: place a new layer kind is added (checkpoints record it by ``kind`` and ``fields``).
KINDS: dict[str, type[Layer]] = {}


class Layer:
    """Base of every spec layer. Subclasses declare parameters and infer shapes.

    ``fields`` names the constructor arguments that define the structure; a checkpoint
    records them, and ``type(layer)(**{f: getattr(layer, f) for f in fields})`` rebuilds
    the layer. Initializers given at construction are code, not data: not recorded.
    """

    kind: str = "Layer"
    fields: tuple[str, ...] = ()
    #: the constructor argument giving the input size the parameters depend on (Dense's
    #: ``in_features``), and the input axis holding that size; None: no such size
    size_field: str | None = None
    size_axis: int = -1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            KINDS[cls.kind] = cls

    def given_input_size(self) -> int | None:
        """The input size given at construction; None if left to inference (or none).

        >>> Dense(3, in_features=4).given_input_size(), Conv2D(8, 3).given_input_size()
        (4, None)
        >>> Conv2D(8, 3).size_axis   # channels-first: the size is the input's axis 1
        1
        """
        return None if self.size_field is None else getattr(self, self.size_field)

    def children(self) -> list[tuple[str, Layer]]:
        """Sub-layers as (key, layer), in order; empty for leaf layers."""
        return []

    def param_decls(self) -> list[ParamDecl]:
        """Parameters with the sizes known from the layer's own arguments."""
        return []

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        """Given input shape ``x`` (batch first), the parameter shapes and the output shape."""
        return {}, x

    def minimal_input(self, shapes: dict[str, Shape]) -> Shape | None:
        """The smallest input shape that gives these parameter shapes (None: not enough known).

        Lets a model be materialized from parameter shapes alone (a checkpoint's), no input:

        >>> Dense(4).minimal_input({"weight": (4, 3), "bias": (4,)})
        (1, 3)
        """
        return None

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        """One line for the printed structure, e.g. ``Dense(? -> 256, relu)``.

        ``shapes`` are the parameter shapes known now, which may fill in input sizes.
        """
        return f"{self.kind}()"

    def __call__(self, *inputs: Any) -> Any:
        """Inside a block's ``forward``: run this layer as the backend's native layer."""
        from ._binding import current
        binding = current()
        if binding is None:
            raise SpecError(f"A {type(self).__name__} spec runs only inside a built model's "
                            f"forward. Build it first: net = unifparam.build(spec); net(X).")
        from ._binding import guard
        check = guard()
        if check is not None:  # the first call: a layer without storage is sized now
            check(self, inputs)
        return binding.call_layer(self, inputs)

    def __repr__(self) -> str:
        return render_tree(self)


def render_tree(layer: Layer, indent: str = "") -> str:
    """The printed structure of a spec, like ``print(torch_module)`` but framework-neutral."""
    kids = layer.children()
    if not kids:
        return layer.describe()
    lines = [f"{layer.kind}("]
    for key, param in layer.own_parameters() if isinstance(layer, Block) else []:
        lines.append(f"{indent}  ({key}): {param!r}")
    for key, child in kids:
        lines.append(f"{indent}  ({key}): {render_tree(child, indent + '  ')}")
    lines.append(f"{indent})")
    return "\n".join(lines)


def _check_activation(activation: str | None, layer: str = "layer") -> str | None:
    if activation is not None and not isinstance(activation, str):
        raise SpecTypeError(f"{layer}: activation must be a name (str) or None, got "
                            f"{type(activation).__name__} {activation!r}; expected one of "
                            f"{ACTIVATIONS}.")
    if activation not in (None, *ACTIVATIONS):
        raise SpecError(
            f"{layer}: unknown activation {activation!r}; expected one of {ACTIVATIONS} or None."
        )
    return None if activation == "identity" else activation


def _check_size(layer: str, what: str, value: Any, required: bool = False) -> int | None:
    """``value`` as a positive int (None allowed unless ``required``); typed errors name it."""
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "a positive int" if required else "a positive int or None"
        raise SpecTypeError(f"{layer}: {what} must be {kind}, got {type(value).__name__} "
                            f"{value!r}.")
    if value <= 0:
        raise SpecError(f"{layer}: {what} must be a positive int, got {value!r}.")
    return int(value)


def _check_flag(layer: str, what: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecTypeError(f"{layer}: {what} must be True or False, got "
                            f"{type(value).__name__} {value!r}.")
    return value


def _check_number(layer: str, what: str, value: Any, low: float, high: float,
                  low_open: bool, high_open: bool) -> float:
    """``value`` as a float in the interval (open or closed ends); typed errors name it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecTypeError(f"{layer}: {what} must be a number, got {type(value).__name__} "
                            f"{value!r}.")
    number = float(value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) or high == math.inf and number == math.inf) \
            or not above or not below:
        interval = (f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
        raise SpecError(f"{layer}: {what} must be in {interval}, got {value!r}.")
    return number


def _act(activation: str | None) -> str:
    return f", {activation}" if activation else ""


def _size(n: int | None) -> str:
    return "?" if n is None else str(n)


def _known(shapes: dict[str, Shape] | None, param: str, axis: int, given: int | None) -> int | None:
    shape = (shapes or {}).get(param)
    return shape[axis] if shape is not None and shape[axis] is not None else given


class Dense(Layer):
    """Fully connected layer ``y = x @ weight.T + bias``; ``weight`` is ``(units, in_features)``.

    >>> Dense(256, activation="relu").param_decls()[0].shape
    (256, None)
    """

    kind = "Dense"
    fields = ("units", "activation", "use_bias", "in_features")
    size_field = "in_features"

    def __init__(self, units: int, activation: str | None = None, *, use_bias: bool = True,
                 in_features: int | None = None, weight_init: Any = None, bias_init: Any = None):
        self.units = _check_size("Dense", "units", units, required=True)
        self.activation = _check_activation(activation, "Dense")
        self.use_bias = _check_flag("Dense", "use_bias", use_bias)
        self.in_features = _check_size("Dense", "in_features", in_features)
        self.weight_init, self.bias_init = weight_init, bias_init

    def param_decls(self) -> list[ParamDecl]:
        decls = [ParamDecl("weight", (self.units, self.in_features), ("out", "in"), "weight",
                           init=self.weight_init)]
        if self.use_bias:
            decls.append(ParamDecl("bias", (self.units,), ("out",), "bias", init=self.bias_init))
        return decls

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        if len(x) < 2:
            raise InputShapeError(f"Layer '{path}' (Dense) expects input (batch, ..., features), "
                                  f"got shape {fmt_shape(x)}. Add a batch dimension.")
        n_in = x[-1]
        if self.in_features is not None and n_in != self.in_features:
            raise InputShapeError(
                f"Layer '{path}' (Dense) was given in_features={self.in_features} but its input "
                f"has {n_in} features (input shape {fmt_shape(x)}). Feed {self.in_features} "
                f"features, or build the layer with in_features={n_in} or without it.")
        shapes = {"weight": (self.units, n_in)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes, (*x[:-1], self.units)

    def minimal_input(self, shapes: dict[str, Shape]) -> Shape | None:
        n_in = _known(shapes, "weight", 1, self.in_features)
        return None if n_in is None else (1, n_in)

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        n_in = _known(shapes, "weight", 1, self.in_features)
        return f"Dense({_size(n_in)} -> {self.units}{_act(self.activation)})"


class Conv2D(Layer):
    """2-D convolution on ``(N, C, H, W)``; ``weight`` is ``(filters, in_channels, kh, kw)``."""

    kind = "Conv2D"
    fields = ("filters", "kernel_size", "stride", "padding", "activation", "use_bias",
              "in_channels")
    size_field, size_axis = "in_channels", 1

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | str = 0, *, activation: str | None = None, use_bias: bool = True,
                 in_channels: int | None = None, weight_init: Any = None, bias_init: Any = None):
        self.filters = _check_size("Conv2D", "filters", filters, required=True)
        ks = _kernel(kernel_size)
        self.kernel_size: tuple[int, int] = ks
        self.stride = _check_size("Conv2D", "stride", stride, required=True)
        if isinstance(padding, bool) or not isinstance(padding, (str, numbers.Integral)):
            raise SpecTypeError(f"Conv2D: padding must be 'same', 'valid' or an int >= 0, got "
                                f"{type(padding).__name__} {padding!r}.")
        if padding not in ("same", "valid") and not (
                isinstance(padding, numbers.Integral) and padding >= 0):
            raise SpecError(f"Conv2D: padding must be 'same', 'valid' or an int >= 0, "
                            f"got {padding!r}.")
        padding = padding if isinstance(padding, str) else int(padding)
        if padding == "same" and stride != 1:
            raise SpecError("Conv2D: padding='same' needs stride=1 (as in PyTorch).")
        if padding == "same" and any(k % 2 == 0 for k in ks):
            raise SpecError("Conv2D: padding='same' needs odd kernel sizes to be portable.")
        self.padding = padding
        self.activation = _check_activation(activation, "Conv2D")
        self.use_bias = _check_flag("Conv2D", "use_bias", use_bias)
        self.in_channels = _check_size("Conv2D", "in_channels", in_channels)
        self.weight_init, self.bias_init = weight_init, bias_init

    @property
    def pads(self) -> tuple[int, int]:
        """Explicit symmetric padding per spatial dim."""
        if self.padding == "same":
            return (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        if self.padding == "valid":
            return (0, 0)
        return (self.padding, self.padding)  # type: ignore[return-value]

    def param_decls(self) -> list[ParamDecl]:
        decls = [ParamDecl("weight", (self.filters, self.in_channels, *self.kernel_size),
                           ("out", "in", "kh", "kw"), "weight", init=self.weight_init)]
        if self.use_bias:
            decls.append(ParamDecl("bias", (self.filters,), ("out",), "bias", init=self.bias_init))
        return decls

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        if len(x) != 4:
            raise InputShapeError(f"Layer '{path}' (Conv2D) expects input (N, C, H, W), got "
                                  f"shape {fmt_shape(x)}.")
        c = x[1]
        if self.in_channels is not None and c != self.in_channels:
            raise InputShapeError(
                f"Layer '{path}' (Conv2D) was given in_channels={self.in_channels} but its input "
                f"has {c} channels (input shape {fmt_shape(x)}). Inputs are channels-first.")
        out_hw = []
        for size, k, p in zip(x[2:], self.kernel_size, self.pads):
            o = None if size is None else (size + 2 * p - k) // self.stride + 1
            if o is not None and o <= 0:
                raise InputShapeError(f"Layer '{path}' (Conv2D): input {fmt_shape(x)} is smaller "
                                      f"than the kernel {self.kernel_size}.")
            out_hw.append(o)
        shapes = {"weight": (self.filters, c, *self.kernel_size)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes, (x[0], self.filters, *out_hw)

    def minimal_input(self, shapes: dict[str, Shape]) -> Shape | None:
        c = _known(shapes, "weight", 1, self.in_channels)
        return None if c is None else (1, c, *self.kernel_size)

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        n_in = _known(shapes, "weight", 1, self.in_channels)
        return (f"Conv2D({_size(n_in)} -> {self.filters}, kernel={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}{_act(self.activation)})")


def _kernel(kernel_size: Any) -> tuple[int, int]:
    """Conv2D's kernel_size as (kh, kw): one positive int or a pair of them."""
    if isinstance(kernel_size, (tuple, list)):
        if len(kernel_size) != 2:
            raise SpecError(f"Conv2D: kernel_size must be an int or a pair (kh, kw), got "
                            f"{kernel_size!r} ({len(kernel_size)} values).")
        return tuple(_check_size("Conv2D", "kernel_size", k, required=True)  # type: ignore
                     for k in kernel_size)
    k = _check_size("Conv2D", "kernel_size", kernel_size, required=True)
    return (k, k)  # type: ignore[return-value]


class Flatten(Layer):
    """Flattens every dimension after the batch (channels-first order)."""

    kind = "Flatten"
    fields = ()

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        rest = x[1:]
        return {}, (x[0], None if None in rest else math.prod(rest))  # type: ignore[arg-type]


class Dropout(Layer):
    """Dropout with rate ``rate``; only active when a model is called with ``training=True``."""

    kind = "Dropout"
    fields = ("rate",)

    def __init__(self, rate: float):
        self.rate = _check_number("Dropout", "rate", rate, 0.0, 1.0, False, True)

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        return f"Dropout({self.rate})"


class Activation(Layer):
    """An activation on its own: ``Activation("relu")``."""

    kind = "Activation"
    fields = ("name",)

    def __init__(self, name: str):
        self.name = _check_activation(name, "Activation") or "identity"

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        return f"Activation({self.name})"


def ReLU() -> Activation:  # noqa: N802 - reads like a layer class, as in torch
    """``Activation("relu")``."""
    return Activation("relu")


class Embedding(Layer):
    """Lookup table ``weight[(num_embeddings, features)]`` indexed by integer inputs."""

    kind = "Embedding"
    fields = ("num_embeddings", "features")

    def __init__(self, num_embeddings: int, features: int, *, weight_init: Any = None):
        self.num_embeddings = _check_size("Embedding", "num_embeddings", num_embeddings,
                                          required=True)
        self.features = _check_size("Embedding", "features", features, required=True)
        self.weight_init = weight_init

    def param_decls(self) -> list[ParamDecl]:
        return [ParamDecl("weight", (self.num_embeddings, self.features), ("vocab", "embed"),
                          "embedding", init=self.weight_init)]

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        return {"weight": (self.num_embeddings, self.features)}, (*x, self.features)

    def minimal_input(self, shapes: dict[str, Shape]) -> Shape | None:
        return (1, 1)

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        return f"Embedding({self.num_embeddings}, {self.features})"


class _Norm(Layer):
    size_field = "in_features"

    def __init__(self, in_features: int | None = None, *, eps: float = 1e-5):
        self.in_features = _check_size(self.kind, "in_features", in_features)
        self.eps = _check_number(self.kind, "eps", eps, 0.0, math.inf, True, True)

    def _features(self, x: Shape, path: str) -> int | None:
        if len(x) < 2:
            raise InputShapeError(f"Layer '{path}' ({self.kind}) expects a batch dimension, "
                                  f"got shape {fmt_shape(x)}.")
        n = x[self.size_axis]
        if self.in_features is not None and n != self.in_features:
            raise InputShapeError(
                f"Layer '{path}' ({self.kind}) was given in_features={self.in_features} but its "
                f"input has {n} features on axis {self.size_axis} (input shape {fmt_shape(x)}).")
        return n

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        return f"{self.kind}({_size(_known(shapes, 'weight', 0, self.in_features))})"

    def minimal_input(self, shapes: dict[str, Shape]) -> Shape | None:
        known = [s[0] for s in shapes.values() if s and s[0] is not None]
        n = known[0] if known else self.in_features
        return None if n is None else (1, n)


class LayerNorm(_Norm):
    """Normalizes the last axis; learnable ``weight`` (scale) and ``bias`` (shift)."""

    kind = "LayerNorm"
    fields = ("in_features", "eps")

    def param_decls(self) -> list[ParamDecl]:
        n = (self.in_features,)
        return [ParamDecl("weight", n, ("out",), "scale"), ParamDecl("bias", n, ("out",), "shift")]

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        n = (self._features(x, path),)
        return {"weight": n, "bias": n}, x


class BatchNorm(_Norm):
    """Batch normalization over axis 1 (channels-first); running statistics are not trainable."""

    kind = "BatchNorm"
    fields = ("in_features", "eps", "momentum")
    size_axis = 1

    def __init__(self, in_features: int | None = None, *, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(in_features, eps=eps)
        # PyTorch convention: new = (1 - m) * old + m * batch
        self.momentum = _check_number("BatchNorm", "momentum", momentum, 0.0, 1.0, False, False)

    def param_decls(self) -> list[ParamDecl]:
        n = (self.in_features,)
        return [ParamDecl("weight", n, ("out",), "scale"), ParamDecl("bias", n, ("out",), "shift"),
                ParamDecl("running_mean", n, ("out",), "running_mean", trainable=False),
                ParamDecl("running_var", n, ("out",), "running_var", trainable=False)]

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        n = (self._features(x, path),)
        return {k: n for k in ("weight", "bias", "running_mean", "running_var")}, x


class Sequential(Layer):
    """Layers applied in order; indexable (``net[0]``, ``net["block 0"]``), nestable.

    Children are positional (``Sequential(a, b)``: names ``0``, ``1``) or named, from a
    mapping or ``add(name, layer)`` (PyTorch's ``add_module``, Keras's ``name=``)::

        >>> net = Sequential({"hidden": Dense(4)}).add("out", Dense(1))
        >>> [key for key, _ in net.children()]
        ['hidden', 'out']
    """

    kind = "Sequential"

    def __init__(self, *layers: Layer | Mapping[str, Layer]):
        self._named: dict[str, Layer] = {}
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            for key, layer in layers[0].items():
                self.add(key, layer)
        else:
            self.add(*layers)  # type: ignore[arg-type]

    @property
    def layers(self) -> list[Layer]:
        return list(self._named.values())

    def add(self, *layers: Layer | str) -> Sequential:
        """Append layers (Gluon's ``net.add``), or one named layer: ``add("out", layer)``;
        returns self."""
        if layers and isinstance(layers[0], str):
            if len(layers) != 2:
                raise SpecTypeError(
                    f"Sequential.add takes unifparam.nn layers, or one name and one layer "
                    f"(add('out', layer)); got {len(layers)} argument(s) starting with the str "
                    f"{layers[0]!r}.")
            items = [(layers[0], layers[1])]
        else:
            items = [(str(len(self._named) + i), layer) for i, layer in enumerate(layers)]
        for key, layer in items:
            if not isinstance(layer, Layer):
                raise SpecTypeError(f"Sequential takes unifparam.nn layers, got "
                                    f"{type(layer).__name__}. "
                                    "Wrap native models with unifparam.build instead.")
            if not isinstance(key, str) or not key or "." in key or key in self._named:
                raise SpecError(f"Sequential: child name {key!r} must be a new non-empty "
                                f"string without '.' (names join with '.' into parameter "
                                f"names).")
            if any(inner is self for _, inner in first_uses(layer)):
                raise SpecCycleError(f"Sequential: child {key!r} contains this Sequential itself, "
                                f"a cycle (a layer cannot be its own sub-layer).")
            self._named[key] = layer
        return self

    @property
    def named(self) -> bool:
        """True if some child has a name other than its position."""
        return any(key != str(i) for i, key in enumerate(self._named))

    def children(self) -> list[tuple[str, Layer]]:
        return list(self._named.items())

    def __getitem__(self, i: int | str) -> Layer:
        if isinstance(i, str):
            return self._named[i]
        return self.layers[i]

    def __len__(self) -> int:
        return len(self._named)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def infer(self, x: Shape, path: str = "") -> tuple[dict[str, Shape], Shape]:
        for key, layer in self.children():
            _, x = layer.infer(x, f"{path}.{key}" if path else key)
        return {}, x


class Parameter:
    """A parameter a :class:`Block` declares itself: ``nn.Parameter((units, None))``.

    ``None`` sizes are filled from the first input by the block's ``build`` hook. ``init``
    is an :mod:`unifparam.init` initializer (default: ``init.Default()``, seeded like every
    other parameter); ``trainable=False`` makes a constant that gradients skip.

    >>> Parameter((3, None)).shape
    (3, None)
    """

    def __init__(self, shape: Shape | int, init: Any = None, role: str = "weight",
                 axes: tuple[str, ...] | None = None, trainable: bool = True):
        from .roles import ROLES
        if role not in ROLES:
            raise (SpecError if isinstance(role, str) else SpecTypeError)(
                f"Parameter(role={role!r}): role must be one of {', '.join(ROLES)}.")
        if not isinstance(trainable, bool):
            raise SpecTypeError(f"Parameter(trainable={trainable!r}): trainable must be True "
                                f"or False.")
        self.init, self.role, self.trainable = init, role, trainable
        self.axes = None if axes is None else tuple(axes)
        self._label = "Parameter"  # "Parameter 'w' of block MLP" once a block holds it
        self._shape: Shape = ()
        self.shape = shape  # type: ignore[assignment]

    @property
    def shape(self) -> Shape:
        return self._shape

    @shape.setter
    def shape(self, shape: Shape | int) -> None:
        shape = (shape,) if isinstance(shape, int) or shape is None else tuple(shape)
        for d in shape:
            if d is not None and (not isinstance(d, int) or isinstance(d, bool) or d <= 0):
                raise SpecError(f"{self._label} shape {shape!r}: sizes must be positive ints "
                                f"or None (known from the input).")
        old = self._shape
        if old and (len(old) != len(shape) or any(
                a is not None and b is not None and a != b for a, b in zip(old, shape))):
            raise SpecError(f"{self._label} of shape {fmt_shape(old)} cannot become "
                            f"{fmt_shape(shape)}: only unknown (None) sizes may be filled.")
        self._shape = shape

    def decl(self, name: str) -> ParamDecl:
        axes = self.axes
        if axes is None:
            axes = ("out", "in") if len(self.shape) == 2 else \
                ("out",) if len(self.shape) == 1 else tuple(f"d{i}" for i in
                                                           range(len(self.shape)))
        return ParamDecl(name, self.shape, axes, self.role, self.trainable, self.init)

    def __repr__(self) -> str:
        return f"Parameter({fmt_shape(self.shape)}, role={self.role!r})"


class Block(Layer):
    """A model with its own ``forward``: subclass it, assign layers, blocks and
    :class:`Parameter` objects as attributes in ``__init__``, write ``forward(*inputs)``.

    Attribute names are the canonical names (``hidden.weight``); a list of layers is a
    :class:`Sequential` (``blocks.0.bias``). Inside ``forward``, ``self.hidden(x)`` runs the
    backend's layer and ``self.weight`` is the backend's array; use :mod:`unifparam.ops`.
    An optional ``build(self, *input_shapes)`` fills ``None`` sizes (Keras's rule).

    >>> from unifparam import ops
    >>> class MLP(Block):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.hidden = Dense(256, activation="relu")
    ...         self.out = Dense(10)
    ...     def forward(self, x):
    ...         return self.out(self.hidden(x))
    >>> [key for key, _ in MLP().children()]
    ['hidden', 'out']
    """

    kind = "Block"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = cls.__name__  # printed name; not a recordable kind (specs are code)

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_built", False)

    def __setattr__(self, name: str, value: Any) -> None:
        _check_member(self, name, value)
        if "_children" not in self.__dict__:
            raise SpecError(f"{type(self).__name__}.__init__ must call super().__init__() "
                            f"before assigning {name!r}.")
        from . import _blockrules as rules
        items = rules.check_container(self.kind, name, value, Layer)
        if items is not None:
            value = Sequential(*items)
        if isinstance(value, (Layer, Parameter)):
            rules.check_name(self.kind, name)
        else:
            rules.check_value(self.kind, name, value)
        if isinstance(value, Parameter):
            old = self._params.get(name)
            if old is not None and old is not value:  # re-declared in build(): same storage
                old.shape = value.shape
                return
            value._label = f"Parameter {name!r} of block {type(self).__name__}"
            self.__dict__.pop(name, None)
            self._children.pop(name, None)
            self._params[name] = value
            return
        self._params.pop(name, None)
        if isinstance(value, Layer):
            self._children[name] = value
        else:
            self._children.pop(name, None)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only reached for names not in __dict__
        params = self.__dict__.get("_params", {})
        if name in params:
            from ._binding import current
            binding = current()
            return params[name] if binding is None else binding.param(self, name)
        raise AttributeError(f"{type(self).__name__!r} block has no attribute {name!r}")

    def add_module(self, name: str, layer: Layer | Parameter) -> None:
        """Register ``layer`` (or a :class:`Parameter`) under ``name``, as
        ``self.<name> = layer`` does, for names made at run time (``str(i)``).

        >>> net = Block(); net.add_module("0", Dense(2)); [k for k, _ in net.children()]
        ['0']
        """
        if not isinstance(layer, (Layer, Parameter)):
            raise SpecTypeError(f"Block {self.kind}: add_module({name!r}, ...) takes a layer "
                                f"or nn.Parameter, got {type(layer).__name__}.")
        setattr(self, name, layer)

    def parameter(self, name: str) -> Parameter:
        """The declared :class:`Parameter` ``name`` (``self.weight`` in a forward is the
        backend's array)."""
        return self._params[name]

    def own_parameters(self) -> list[tuple[str, Parameter]]:
        """This block's own parameters as (name, Parameter), in declaration order."""
        return list(self._params.items())

    def children(self) -> list[tuple[str, Layer]]:
        return list(self._children.items())

    def param_decls(self) -> list[ParamDecl]:
        return [p.decl(name) for name, p in self._params.items()]

    def build(self, *input_shapes: Shape) -> None:
        """Fill ``None`` sizes of this block's parameters from its input shapes."""

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, *inputs).")

    def describe(self, shapes: dict[str, Shape] | None = None) -> str:
        own = ", ".join(f"{n}={fmt_shape((shapes or {}).get(n) or p.shape)}"
                        for n, p in self._params.items())
        return f"{self.kind}({own})"


def _check_member(block: Block, name: str, value: Any) -> None:
    """Refuse what a block cannot hold: a layer or Parameter under a dotted name, a layer
    containing the block itself (a cycle). Lists mixing layers with other values:
    :func:`unifparam._blockrules.check_container`."""
    items = [value] if isinstance(value, (Layer, Parameter)) else \
        list(value.values()) if isinstance(value, dict) else \
        list(value) if isinstance(value, (list, tuple)) else []
    if not any(isinstance(v, (Layer, Parameter)) for v in items):
        return
    where = f"{type(block).__name__}.{name}"
    if "." in name or not name:
        raise SpecError(f"{where}: attribute names become parameter names joined with '.', "
                        f"so {name!r} cannot hold a layer or Parameter. Use a name without "
                        f"'.', e.g. {name.replace('.', '_')!r}.")
    for layer in items:
        if isinstance(layer, Layer) and any(inner is block for _, inner in first_uses(layer)):
            raise SpecCycleError(f"{where}: the layer assigned contains {type(block).__name__} "
                            f"itself, a cycle (a block cannot be its own sub-layer). Assign "
                            f"sub-layers that do not hold the block.")


def join(path: str, key: str) -> str:
    """Canonical name of ``key`` under layer ``path``: ``join("0.1", "weight") == "0.1.weight"``."""
    return f"{path}.{key}" if path else key


def first_uses(spec: Layer, path: str = "") -> Iterator[tuple[str, Layer]]:
    """Every layer of ``spec`` once, with the canonical path of its first use (pre-order).

    A layer used twice is one storage named after its first use; adapters build it once.

    >>> shared = Dense(2)
    >>> [p for p, _ in first_uses(Sequential(shared, shared))]
    ['', '0']
    """
    seen: set[int] = set()

    def visit(layer: Layer, where: str) -> Iterator[tuple[str, Layer]]:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        yield where, layer
        for key, child in layer.children():
            yield from visit(child, join(where, key))

    yield from visit(spec, path)


def uses(spec: Layer, path: str = "") -> Iterator[tuple[str, Layer]]:
    """Every use of every layer of ``spec`` with its canonical path (pre-order): a layer
    used twice appears twice, with everything inside it.

    >>> inner = Sequential(Dense(2))
    >>> [p for p, _ in uses(Sequential(inner, inner))]
    ['', '0', '0.0', '1', '1.0']
    """
    yield path, spec
    for key, child in spec.children():
        yield from uses(child, join(path, key))
