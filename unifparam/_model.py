"""The Model handle, the Param live view and the bookkeeping behind them.

A :class:`Model` is what :func:`unifparam.build` returns. Indexing gives handles of
sub-layers that share one :class:`ModelState` (``net[0]``, ``rgnet[0][1][0]``). A
:class:`Param` is a live view: every property reads the current state, never a copy.

    >>> net = unifparam.build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> net[1].weight
    Parameter 1.weight (shape=(1, None), dtype=float32, deferred)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import nn
from ._backend import ABSTRACT, MATERIALIZED
from ._firstcall import run
from ._lazy import np
from ._locking import serialized
from ._plan import contiguous
from ._state import ModelState, Node, Slot, flip
from ._sync import check, watch
from .errors import (
    ArgumentError,
    ArgumentValueError,
    DeferredParameterError,
    HandleAttributeError,
    ParamIndexError,
    UnknownNameError,
    ValueShapeError,
    closest,
    fmt_shape,
)

if TYPE_CHECKING:
    from .init import Initializer

Shape = nn.Shape


class Param:
    """A live view of one parameter, in canonical layout.

    >>> w = net[0].weight
    >>> w[:] += 1; w[0, 0] = 42
    >>> w.numpy()[0, 0]
    42.0
    """

    __slots__ = ("_st", "_name")

    def __init__(self, state: ModelState, name: str):
        self._st, self._name = state, name

    # ---- description ------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical name this view was obtained by (``"1.weight"``)."""
        return self._name

    @property
    def _slot(self) -> Slot:
        return self._st.slots[self._st.resolve(self._name)[0]]

    @property
    def _status(self) -> tuple[Shape | None, str]:
        return self._st.status(self._st.resolve(self._name)[0])

    @property
    def _transposed(self) -> bool:
        return self._st.resolve(self._name)[1]

    @property
    def shape(self) -> Shape | None:
        """Canonical shape; ``None`` for each dimension not known yet."""
        return flip(self._status[0], self._transposed)

    @property
    def size(self) -> int | None:
        """Number of values (None while a size is unknown), like numpy's ``size``."""
        shape = self.shape
        return None if shape is None or None in shape else math.prod(shape)  # type: ignore[arg-type]

    @property
    def dtype(self) -> str:
        """Canonical storage dtype (``"bfloat16"``), read from the framework each time."""
        return self._st.dtype(self._st.resolve(self._name)[0])

    @property
    def device(self) -> str:
        """Where the value is, as the framework reports it now: ``"cpu:0"``, ``"gpu:1"``
        (docs/devices.md); before it has memory, where it will be materialized."""
        return self._st.placed_on([self._st.resolve(self._name)[0]])

    @property
    def state(self) -> str:
        """``"deferred"`` (shape unknown), ``"abstract"`` (no memory) or ``"materialized"``."""
        return self._status[1]

    @property
    def trainable(self) -> bool:
        """Whether training updates it, as the framework says now (a frozen layer: False)."""
        slot = self._slot
        live = self._st.backend.trainable(self._st.native, slot.ref)
        return slot.trainable if live is None else live

    @property
    def role(self) -> str:
        """weight, bias, embedding, scale, shift, running_mean or running_var."""
        return self._slot.role

    @property
    def axes(self) -> tuple[str, ...] | None:
        """Logical axis names, e.g. ``("out", "in")``."""
        axes = self._slot.axes
        return tuple(reversed(axes)) if axes is not None and self._transposed else axes

    @property
    def init(self) -> Initializer | None:
        """The registered initializer (None: the framework's default)."""
        reg = self._slot.reg
        return None if reg is None else reg.init

    @property
    def aliases(self) -> tuple[str, ...]:
        """The other names of this storage (tied parameters)."""
        root, _ = self._st.resolve(self._name)
        return tuple(n for n in self._st.names_of(root) if n != self._name)

    @property
    def grad(self) -> np.ndarray | None:
        """The gradient from the last :func:`unifparam.gradients` call; None before any."""
        g = self._slot.grad
        return g.T if g is not None and self._transposed else g

    @property
    def native(self) -> Any:
        """The framework's own parameter object (for a transposed tie: the root's)."""
        return self._st.backend.native_object(self._st.native, self._slot.ref)

    @property
    def native_name(self) -> str:
        return self._slot.native_name

    # ---- values ---------------------------------------------------------------------
    @serialized
    def numpy(self) -> np.ndarray:
        """A copy of the value as a numpy array, canonical layout."""
        shape, state = self._status
        if state != MATERIALIZED:
            raise DeferredParameterError(not_ready(self._name, flip(shape, self._transposed),
                                                    state))
        value = np.array(self._st.backend.read(self._st.native, self._slot.ref), copy=True)
        return value.T.copy() if self._transposed else value

    @property
    def data(self) -> np.ndarray:
        """The value as numpy (a copy, as :meth:`numpy`); ``p.data = v`` writes it
        (as :meth:`set`)."""
        return self.numpy()

    @data.setter
    def data(self, value: Any) -> None:
        self.set(value)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        value = self.numpy()
        return value if dtype is None else value.astype(dtype)

    @serialized
    def set(self, value: Any) -> None:
        """Replace the whole value (same shape; cast to the parameter's dtype)."""
        slot = self._slot
        shape, state = self._status
        if state != MATERIALIZED:
            raise DeferredParameterError(not_ready(self._name, flip(shape, self._transposed),
                                                    state))
        arr = self._real(value)
        if arr.shape != self.shape:
            raise ValueShapeError(
                f"Cannot write a value of shape {fmt_shape(arr.shape)} to parameter "
                f"'{self._name}' of shape {fmt_shape(self.shape)}. Reshape the value, or write "
                f"a slice: p[...] = v broadcasts.")
        arr = contiguous(arr.T if self._transposed else arr)
        self._st.call("write", slot.ref, arr if arr is not value else arr.copy())

    def _real(self, value: Any) -> np.ndarray:
        """``value`` as an array of the parameter's dtype; typed errors name the parameter
        for values that are not real numbers or that overflow the dtype."""
        from .dtypes import FLOATS, finfo, numpy_dtype
        dtype = self.dtype
        try:
            arr = np.asarray(value)
            if arr.dtype == object and isinstance(value, (list, tuple)):
                np.array(value, dtype=float)  # ragged: numpy < 1.24 made objects, not errors
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise ValueShapeError(f"Cannot write {type(value).__name__} to parameter "
                                  f"'{self._name}': {e}") from None
        if arr.dtype.kind not in "biuf" and arr.dtype.name not in FLOATS:
            raise ArgumentError(
                f"Cannot write a value of dtype {arr.dtype} ({type(value).__name__}) to parameter "
                f"'{self._name}' ({dtype}): it takes real numbers"
                f"{'; take the real part first (v.real)' if arr.dtype.kind == 'c' else ''}.")
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(numpy_dtype(dtype))
        if (arr.dtype.kind == "f" or arr.dtype.name in FLOATS) and arr.dtype != cast.dtype and (
                np.isfinite(arr) & ~np.isfinite(cast)).any():
            big = float(np.abs(arr[np.isfinite(arr) & ~np.isfinite(cast)]).max())
            raise ArgumentValueError(
                f"Value {big:g} written to parameter '{self._name}' overflows {dtype} (largest "
                f"{float(finfo(dtype).max):g}). Scale the values down.")
        return cast

    def _index_error(self, index: Any, e: Exception) -> Exception:
        if isinstance(e, IndexError):
            return ParamIndexError(f"Index {index!r} is out of range for parameter "
                                   f"'{self._name}' of shape {fmt_shape(self.shape)}: {e}")
        return ArgumentError(f"Cannot index parameter '{self._name}' with {index!r} "
                             f"({type(index).__name__}): {e}. Use ints, slices or arrays.")

    @serialized
    def __getitem__(self, index: Any) -> np.ndarray:
        full = self.numpy()
        try:
            return full[index]
        except (IndexError, TypeError, ValueError) as e:
            raise self._index_error(index, e) from None

    @serialized
    def __setitem__(self, index: Any, value: Any) -> None:
        full = self.numpy()
        arr = self._real(value)
        try:
            full[index] = arr
        except IndexError as e:
            raise self._index_error(index, e) from None
        except ValueError as e:
            raise ValueShapeError(
                f"Cannot write a value of shape {fmt_shape(np.shape(value))} to "
                f"'{self._name}'[{index!r}] (parameter shape {fmt_shape(self.shape)}): {e}"
            ) from None
        except TypeError as e:
            raise self._index_error(index, e) from None
        self.set(full)

    @serialized
    def _inplace(self, op: Any, other: Any) -> Param:
        current = self.numpy()
        arr = self._real(other)  # typed errors for strings, complex, overflow
        with np.errstate(over="ignore"):
            try:  # in float64, so that an overflowing result is seen when cast back
                out = op(current.astype(np.float64), np.asarray(other).astype(np.float64))
            except ValueError as e:
                raise ValueShapeError(
                    f"Cannot combine parameter '{self._name}' of shape {fmt_shape(self.shape)} "
                    f"with a value of shape {fmt_shape(arr.shape)}: {e}") from None
        if out.shape != current.shape:
            raise ValueShapeError(
                f"In-place update of parameter '{self._name}' of shape {fmt_shape(self.shape)} "
                f"with a value of shape {fmt_shape(arr.shape)} would give shape "
                f"{fmt_shape(out.shape)}. Use a value that broadcasts to the parameter.")
        self.set(out)
        return self

    def __iadd__(self, other: Any) -> Param:
        return self._inplace(np.add, other)

    def __isub__(self, other: Any) -> Param:
        return self._inplace(np.subtract, other)

    def __imul__(self, other: Any) -> Param:
        return self._inplace(np.multiply, other)

    def __itruediv__(self, other: Any) -> Param:
        return self._inplace(np.true_divide, other)

    def __repr__(self) -> str:
        state = "" if self.state == MATERIALIZED else f", {self.state}"
        return f"Parameter {self._name} (shape={fmt_shape(self.shape)}, dtype={self.dtype}{state})"

    def __str__(self) -> str:
        """``print(p)``: the one-line description, then the values once it has them."""
        if self.state != MATERIALIZED:
            return repr(self)
        return f"{self!r}\n{np.array2string(self.numpy())}"

    def _repr_html_(self) -> str:
        from ._display import param_html
        return param_html(self)


def not_ready(name: str, shape: Shape | None, state: str) -> str:
    if state == ABSTRACT:
        return (f"Parameter '{name}' has shape {fmt_shape(shape)} but no memory yet (materialized "
                f"abstractly). Call unifparam.materialize(net) to allocate and initialize it.")
    if shape is not None and None not in shape:
        return (f"Parameter '{name}' has shape {fmt_shape(shape)} but no values yet. Call "
                f"unifparam.initialize(net) (a model whose sizes are all known gets memory "
                f"then), unifparam.materialize(net, X) or run net(X) once.")
    return (f"Parameter '{name}' has shape {fmt_shape(shape)}: its input size is not known yet. "
            f"Call unifparam.materialize(net, X) or run net(X) once.")


class ParamDict(dict):
    """Ordered mapping name -> Param; unknown names raise UnknownNameError with suggestions."""

    def __missing__(self, key: str) -> Param:
        raise UnknownNameError(f"No parameter named {key!r}.{closest(str(key), self)} "
                               f"Known: {', '.join(list(self)[:8])}"
                               f"{', ...' if len(self) > 8 else ''}")


class Model:
    """Handle of a built model or of one of its layers.

    Callable (``net(X)``), indexable (``net[0]``), with parameters as attributes of leaf
    layers (``net[0].weight``) and the framework's own object as ``net.native``.
    """

    __slots__ = ("_st", "_node")

    def __init__(self, state: ModelState, node: Node):
        object.__setattr__(self, "_st", state)
        object.__setattr__(self, "_node", node)

    @property
    def path(self) -> str:
        """Canonical path of this layer (``""`` for the whole model)."""
        return self._node.path

    @property
    def backend(self) -> str:
        """The backend configuration, as ``build(..., backend=)`` takes it (``keras:jax``)."""
        return self._st.backend.configuration

    @property
    def device(self) -> str:
        """Where the model's parameters are, read from the framework each time
        (``"cpu:0"``; several comma-joined). Move them with :func:`unifparam.to`."""
        return self._st.placed_on(self._st.roots_under(self._node))

    @property
    def native(self) -> Any:
        """The framework's own model or layer object."""
        return self._st.backend.native_layer(self._st.native, self._node.path)

    @property
    def spec(self) -> nn.Layer | None:
        """The spec this model was built from (None for an adopted native model)."""
        if self._st.spec is None:
            return None
        layer: nn.Layer = self._st.spec
        for key in filter(None, self._node.path.split(".")):
            layer = dict(layer.children())[key]
        return layer

    @serialized
    def __call__(self, *inputs: Any, training: bool = False) -> Any:
        if self.path:
            from .errors import UnsupportedError
            raise UnsupportedError(f"Call the whole model, not layer '{self.path}'.")
        check(self._st, listing=False)
        return run(self._st, inputs, training)

    def _child(self, key: str) -> Model:
        return Model(self._st, self._node.children[key])

    def __getitem__(self, key: int | str) -> Model:
        kids = self._node.children
        if isinstance(key, int):
            keys = list(kids)
            if not -len(keys) <= key < len(keys):
                raise UnknownNameError(f"Layer '{self.path or 'model'}' has {len(keys)} children; "
                                       f"index {key} is out of range.")
            return self._child(keys[key])
        node = self._node
        for part in str(key).split("."):
            if part not in node.children:
                where = node.path or "the model"
                raise UnknownNameError(f"No layer {key!r} in {where}.{closest(part, node.children)}"
                                       f" Children: {', '.join(node.children) or 'none'}.")
            node = node.children[part]
        return Model(self._st, node)

    def __getattr__(self, name: str) -> Any:
        node = object.__getattribute__(self, "_node")
        if name in node.params:
            return Param(object.__getattribute__(self, "_st"), node.params[name])
        if name in node.children:
            return Model(object.__getattribute__(self, "_st"), node.children[name])
        raise HandleAttributeError(f"Layer '{node.path or 'model'}' ({node.kind}) has no "
                                   f"attribute {name!r}."
                                   f"{closest(name, [*node.params, *node.children])}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Param) and name in self._node.params and value._st is self._st:
            return  # the rebinding of `net[0].weight += 1`: the write already happened
        raise HandleAttributeError(f"Cannot assign {name!r} on the handle of layer "
                                   f"'{self._node.path or 'model'}' ({self._node.kind}). Write "
                                   f"values with p[...] = v, or tie parameters with "
                                   f"unifparam.tie.")

    def __getstate__(self) -> tuple[ModelState, str]:
        return self._st, self._node.path

    def __setstate__(self, state: tuple[ModelState, str]) -> None:
        """Unpickled or deep-copied (the native model along): ``__setattr__`` refuses."""
        object.__setattr__(self, "_st", state[0])
        object.__setattr__(self, "_node", state[0].nodes[state[1]])
        watch(state[0])  # the copy's own native model (its lazy layers) is watched

    def apply(self, fn: Any) -> Model:
        """Call ``fn(layer)`` on every sub-layer, children first, then this one (torch's order).

        >>> net.apply(lambda layer: print(layer.path))
        """
        for child in self:
            child.apply(fn)
        fn(self)
        return self

    def to_numpy(self, value: Any) -> np.ndarray:
        """A native output (torch tensor, jax or tf array) as numpy."""
        return np.asarray(self._st.backend.to_numpy(value))

    def __len__(self) -> int:
        return len(self._node.children)

    def __iter__(self) -> Iterator[Model]:
        return (self._child(k) for k in self._node.children)

    def __repr__(self) -> str:
        return render(self._st, self._node)

    def _repr_html_(self) -> str:
        from ._display import model_html
        return model_html(self)


def render(state: ModelState, node: Node, indent: str = "") -> str:
    """Printed structure of a canonical tree, with the sizes known now."""
    if not node.children:
        if node.spec is None:
            return node.label()
        shapes = {}
        for local, name in node.params.items():
            root, t = state.resolve(name)
            shapes[local] = flip(state.status(root)[0], t)
        return node.spec.describe(shapes)
    lines = [f"{node.kind}("]
    for local, name in node.params.items():  # a block's own parameters, then its children
        root, t = state.resolve(name)
        lines.append(f"{indent}  ({local}): Parameter{fmt_shape(flip(state.status(root)[0], t))}")
    for key, child in node.children.items():
        lines.append(f"{indent}  ({key}): {render(state, child, indent + '  ')}")
    lines.append(f"{indent})")
    return "\n".join(lines)
