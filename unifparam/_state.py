"""What the core knows about one model: its layer tree, storages, aliases, registrations.

:class:`ModelState` is shared by a model handle and the handles of its sub-layers. It holds
the canonical facts (names, roles, axes, the shape the core has established) and the
adapter's native state; every adapter call that changes the model goes through
:meth:`ModelState.call`, the one place where the returned native state is kept. Shapes and
states are read live from the adapter and merged with the core's knowledge, never cached.

    >>> st = state_from_spec(backend, spec)              # doctest: +SKIP
    >>> st.status("0.weight")                            # doctest: +SKIP
    ((8, None), 'deferred')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import nn
from ._backend import MATERIALIZED, Backend, NativeLayer, NativeParam
from ._convert import default_seed
from .errors import UnknownNameError, closest

if TYPE_CHECKING:
    from .init import Initializer

Shape = nn.Shape


@dataclass
class Registration:
    """An initializer registered for a parameter. ``init=None``: the framework's default."""

    init: Initializer | None
    seed: int | None = None
    source: str = "initialize"  # "constructor" | "initialize" | "select" | "default"
    role_default: bool = False  # fill with the role's standard value (bias 0, scale 1)


@dataclass
class Slot:
    """One parameter storage, known by its canonical (first-use) name.

    ``shape`` is what the core has established (spec, ties, traces, the adapter); it only
    ever gains known sizes. Whether storage exists is asked of the adapter each time.
    """

    name: str
    layer: str
    ref: Any
    shape: Shape | None
    role: str = "weight"
    axes: tuple[str, ...] | None = None
    trainable: bool = True
    dtype: str = "float32"
    native_name: str = ""
    reg: Registration | None = None
    initialized: bool = False
    grad: Any = None


@dataclass
class Alias:
    """Another name of a storage: a layer used twice, or an explicit tie."""

    root: str
    transpose: bool = False
    native: bool = True  # shared by the framework itself (False: an explicit tie())
    ref: Any = None      # the alias's own native slot, re-pointed at the root by alias()
    carry: Any = None    # values to move into the root when the tie is first applied


@dataclass
class Node:
    """A layer in the canonical tree: path, kind, printed text, children, parameter names."""

    path: str
    kind: str
    text: str | Callable[[], str]  # a function: read live (a lazy module once materialized)
    children: dict[str, Node] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # local name -> canonical name
    spec: nn.Layer | None = None

    def label(self) -> str:
        """The layer's printed text as it is now."""
        return self.text() if callable(self.text) else self.text


def unify(x: Shape | None, y: Shape | None) -> Shape | None | bool:
    """The shape both describe, None if neither is known, False if they contradict.

    >>> unify((8, None), (None, 4)), unify((8,), (9,))
    ((8, 4), False)
    """
    if x is None or y is None:
        return x if y is None else y
    if len(x) != len(y) or any(i is not None and j is not None and i != j for i, j in zip(x, y)):
        return False
    return tuple(i if i is not None else j for i, j in zip(x, y))


def complete(shape: Shape | None) -> bool:
    """True if every size of ``shape`` is known."""
    return shape is not None and None not in shape


def flip(shape: Any, transpose: bool) -> Any:
    """``shape`` (or axes) reversed when ``transpose``."""
    return tuple(reversed(shape)) if transpose and shape is not None else shape


class ModelState:
    """Everything the core knows about one model; shared by its sub-layer handles."""

    def __init__(self, backend: Backend, native: Any, root: Node, spec: nn.Layer | None):
        self.backend, self.native, self.root, self.spec = backend, native, root, spec
        self.slots: dict[str, Slot] = {}
        self.aliases: dict[str, Alias] = {}
        self.nodes: dict[str, Node] = {}
        self.placement: tuple[Any, Any] | None = None  # (mesh, layout) of an abstract model
        self.device: str | None = None  # where new storages go (unifparam.to, device=)
        self._index(root)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """An adopted model of a backend whose layers copy apart from their model (Keras
        pickles each layer by its config) is copied as its native model, adopted again."""
        if self.spec is not None or not self.backend.copy_by_adoption:
            return super().__reduce_ex__(protocol)
        if any(not a.native for a in self.aliases.values()):
            from .errors import UnsupportedError
            raise UnsupportedError(
                f"A {self.backend.configuration} model with explicit ties cannot be copied or "
                f"pickled: the framework's copy does not keep them. Save it with "
                f"unifparam.save and load into a new model.")
        regs = {n: (s.reg, s.initialized) for n, s in self.slots.items()}
        return readopt, (self.backend.configuration, self.backend.native_layer(self.native, ""),
                         regs)

    def _index(self, node: Node) -> None:
        self.nodes[node.path] = node
        for child in node.children.values():
            self._index(child)

    # ---- names ----------------------------------------------------------------------
    def resolve(self, name: str) -> tuple[str, bool]:
        """(root name, transposed?) of any parameter name."""
        if name in self.slots:
            return name, False
        alias = self.aliases.get(name)
        if alias is None:
            known = [*self.slots, *self.aliases]
            raise UnknownNameError(f"Model has no parameter {name!r}.{closest(name, known)}")
        return alias.root, alias.transpose

    def names_of(self, root: str) -> list[str]:
        """Every name of one storage, root first."""
        return [root, *(n for n, a in self.aliases.items() if a.root == root)]

    def names_under(self, node: Node) -> list[str]:
        """Every parameter name (aliases included) in ``node``'s subtree, in model order."""
        out = list(node.params.values())
        for child in node.children.values():
            out += self.names_under(child)
        return out

    def roots_under(self, node: Node) -> list[str]:
        """Each storage in ``node``'s subtree once, by root name, in model order."""
        return list(dict.fromkeys(self.resolve(n)[0] for n in self.names_under(node)))

    # ---- live status ------------------------------------------------------------------
    def status(self, root: str) -> tuple[Shape | None, str]:
        """The storage's shape (core knowledge merged with the adapter's) and state."""
        slot = self.slots[root]
        shape, state = self.backend.status(self.native, slot.ref)
        merged = unify(slot.shape, shape)
        if merged is False:  # storage that exists is the truth; a partial report is not
            merged = shape if state == MATERIALIZED else slot.shape
        slot.shape = merged  # type: ignore[assignment]
        return merged, state  # type: ignore[return-value]

    def dtype(self, root: str) -> str:
        """The storage's canonical dtype, as the framework stores it now."""
        slot = self.slots[root]
        if self.state_of(root) == "deferred":  # no storage yet: the dtype it is planned in
            return slot.dtype
        live = self.backend.dtype_of(self.native, slot.ref)
        if live is not None:
            from .dtypes import canonical
            slot.dtype = canonical(live)
        return slot.dtype

    def placed_on(self, roots: list[str] | None = None) -> str:
        """Where ``roots`` (default: every storage) are, as portable device names: one, or
        several comma-joined; with no memory yet, where they will be materialized."""
        found: list[str] = []
        for root in self.slots if roots is None else roots:
            where = self.backend.device_of(self.native, self.slots[root].ref)
            for name in (where or "").split(","):
                if name and name not in found:
                    found.append(name)
        return ",".join(found) or self.device or self.backend.default_device()

    def state_of(self, root: str) -> str:
        return self.status(root)[1]

    def all_in(self, *states: str) -> bool:
        """True if every storage is in one of ``states``."""
        return all(self.state_of(n) in states for n in self.slots)

    # ---- the one place native state changes ------------------------------------------
    def call(self, primitive: str, *args: Any) -> None:
        """Run a state-changing adapter primitive and keep the state it returns."""
        self.native = getattr(self.backend, primitive)(self.native, *args)


def state_from_spec(backend: Backend, spec: nn.Layer) -> ModelState:
    """The core's state for a model built from ``spec`` by ``backend``."""
    native, natives = backend.build(spec)
    first_use: dict[int, str] = {}
    aliases: dict[str, str] = {}

    def visit(layer: nn.Layer, path: str) -> Node:
        node = Node(path, layer.kind, layer.describe(), spec=layer)
        first = first_use.setdefault(id(layer), path)
        for decl in layer.param_decls():
            name = nn.join(path, decl.name)
            node.params[decl.name] = name
            if first != path:  # the same spec object again: its storage is the first use's
                aliases[name] = nn.join(first, decl.name)
        for key, child in layer.children():
            node.children[key] = visit(child, nn.join(path, key))
        return node

    root = visit(spec, "")
    st = ModelState(backend, native, root, spec)
    for node in st.nodes.values():
        decls = {d.name: d for d in node.spec.param_decls()} if node.spec else {}
        for local, name in node.params.items():
            if name in aliases:
                first = aliases[name]
                st.aliases[name] = Alias(st.aliases[first].root if first in st.aliases
                                         else first)
                continue
            p, decl = natives[name], decls[local]
            reg = None if decl.init is None else Registration(_as_init(decl.init),
                                                              source="constructor")
            if reg is None and (isinstance(node.spec, nn.Block) or default_seed() is not None):
                from .init import Default  # portable and seeded: same values on every backend
                reg = Registration(Default(), source="default",
                                   role_default=decl.role not in Default.roles)
            st.slots[name] = Slot(name, node.path, p.ref, decl.shape, decl.role, decl.axes,
                                  decl.trainable, p.dtype, p.native_name, reg)
    return st


def state_from_tree(backend: Backend, native: Any, tree: NativeLayer) -> ModelState:
    """The core's state for an adopted native model described by ``tree``."""
    storages: dict[Any, str] = {}
    slots: list[Slot] = []
    aliases: dict[str, Alias] = {}

    def visit(layer: NativeLayer) -> Node:
        node = Node(layer.path, layer.kind, layer.text)
        for local, p in layer.params.items():
            node.params[local] = p.name
            key = p.storage if p.storage is not None else p.name
            if key in storages:  # re-pointed after every allocation (meta -> to_empty)
                aliases[p.name] = Alias(storages[key], ref=p.ref)
                continue
            storages[key] = p.name
            slots.append(_slot(p, layer.path))
        for key, child in layer.children:
            node.children[key] = visit(child)
        return node

    st = ModelState(backend, native, visit(tree), None)
    st.slots = {s.name: s for s in slots}
    st.aliases = aliases
    return st


def readopt(configuration: str, native: Any, regs: dict[str, Any]) -> ModelState:
    """The state of a copied adopted model: adopted again, registrations kept by name."""
    from ._registry import get_backend
    backend = get_backend(configuration)
    st = state_from_tree(backend, *backend.adopt(native))
    for name, (reg, initialized) in regs.items():
        if name in st.slots:
            st.slots[name].reg, st.slots[name].initialized = reg, initialized
    return st


def _slot(p: NativeParam, layer: str) -> Slot:
    return Slot(p.name, layer, p.ref, p.shape, p.role, p.axes, p.trainable, p.dtype,
                p.native_name)


def _as_init(obj: Any) -> Initializer | None:
    from .init import as_initializer
    return as_initializer(obj)
