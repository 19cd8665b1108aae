"""Portable checkpoints: save on one backend, load on any other, safely.

Files are plain safetensors: canonical names, canonical (torch state-dict) layout, each
storage once; ties, trainability, the spec and the unifparam version are in the metadata.

    >>> unifparam.save(net, "mlp.safetensors")
    >>> fresh = unifparam.build(spec, backend="keras:jax")   # shapes still unknown
    >>> unifparam.load(fresh, "mlp.safetensors")             # materialized from the file
    LoadReport(loaded=4, missing=[], unexpected=[])
    >>> print(unifparam.checkpoint.inspect_file("mlp.safetensors"))

``load`` validates everything (names, shapes, dtypes, ties, how to materialize) before its
first change, so a failed load leaves the model exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import _ckptfile
from ._backend import DEFERRED, MATERIALIZED, Materialization
from ._ckptfile import Checkpoint
from ._lazy import np
from ._model import Model, ModelState, _not_ready
from .errors import (
    CheckpointMismatchError,
    DeferredParameterError,
    InputShapeError,
    SpecError,
    TieError,
    UnsupportedError,
    closest,
    fmt_shape,
)

Shape = tuple[int | None, ...]
#: Files at least this large show a progress bar when stdout is a terminal.
PROGRESS_THRESHOLD = 64 * 2**20


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load` did: names loaded, model names the file lacks, file names unused."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    tied: tuple[str, ...] = ()  # names tied by this load, as the file records

    def __repr__(self) -> str:
        return (f"LoadReport(loaded={len(self.loaded)}, missing={list(self.missing)}, "
                f"unexpected={list(self.unexpected)})")


# ---- save -------------------------------------------------------------------------------
def save(model: Model, path: str | os.PathLike[str]) -> None:
    """Write every parameter of ``model`` to ``path`` (safetensors), atomically.

    Each storage is written once under its canonical name, in canonical layout; ties,
    trainability, the spec and the unifparam version go to the metadata.

    >>> unifparam.save(net, "net.safetensors")
    """
    from . import __version__
    from ._specio import spec_to_json

    st = _root_state(model, "save")
    for name, slot in st.slots.items():
        if st.refresh(slot).state != MATERIALIZED:
            raise DeferredParameterError(_not_ready(name, slot.shape, slot.state)
                                         + " Then save it.")
        if slot.dtype not in _ckptfile.CODES:
            raise UnsupportedError(f"Parameter '{name}' has dtype {slot.dtype}, which the "
                                   f"checkpoint format cannot store.")
    arrays = {name: np.asarray(st.backend.read(st.native, slot.ref), dtype=slot.dtype)
              for name, slot in st.slots.items()}
    metadata = {
        "format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION,
        "unifparam_version": __version__, "backend": st.backend.name,
        "ties": json.dumps([[n, a.root, a.transpose, not a.native]
                            for n, a in st.aliases.items()]),
        "trainable": json.dumps({n: s.trainable for n, s in st.slots.items()}),
    }
    if st.spec is not None:
        with contextlib.suppress(SpecError):  # a user-defined layer: no spec recorded
            metadata["spec"] = spec_to_json(st.spec)
    _ckptfile.write(path, arrays, metadata)


# ---- load -------------------------------------------------------------------------------
@dataclass
class _Group:
    """One stored tensor and the model storages it fills: root -> transposed-from-file?"""

    source: str
    targets: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Plan:
    groups: list[_Group]
    ties: list[tuple[str, str, bool]]            # (root, other root, transpose) to tie
    post: dict[str, tuple[str, bool]]            # pre-tie root -> (post-tie root, transpose)
    request: Materialization | None
    inits: dict[str, np.ndarray | None]
    report: LoadReport


def load(model: Model, path: str | os.PathLike[str], *, strict: bool = True,
         progress: bool | None = None) -> LoadReport:
    """Load the checkpoint at ``path`` into ``model`` (any backend, same spec).

    A model whose shapes are unknown is materialized from the file's shapes (no example
    input). Ties recorded in the file are restored. ``strict=False`` loads the names both
    have and reports the rest; shape and dtype mismatches always fail, before any change.

    >>> report = unifparam.load(net, "net.safetensors", strict=False)
    >>> report.missing, report.unexpected
    ((), ())
    """
    st = _root_state(model, "load")
    ck = _ckptfile.read(path)
    plan = _plan(st, ck, strict)
    arrays = ck.arrays()  # memory-mapped: bytes are read as they are copied into storage
    _apply(model, st, plan, arrays, _progress_enabled(progress, ck.size))
    return plan.report


def _plan(st: ModelState, ck: Checkpoint, strict: bool) -> _Plan:
    """Everything load will do, checked against the model; raises before any change."""
    file_root = {n: (n, False) for n in ck.order()}
    file_root.update({t.name: (t.root, t.transpose) for t in ck.ties})
    names = [*st.slots, *st.aliases]
    unexpected = tuple(n for n in file_root if n not in st.slots and n not in st.aliases)
    by_source: dict[str, _Group] = {}
    seen: dict[str, tuple[str, bool]] = {}  # model root -> (file root, transposed)
    for name in names:
        if name not in file_root:
            continue
        source, x = file_root[name]
        root, t = st.resolve(name)
        rel = x ^ t  # model root = file tensor, transposed if rel
        if seen.setdefault(root, (source, rel)) != (source, rel):
            other = next(n for n in st.names_of(root) if n in file_root and n != name)
            raise CheckpointMismatchError(
                f"The model ties '{name}' and '{other}' (one storage), but the file {ck.path} "
                f"stores them separately. Load into a model without that tie.")
        by_source.setdefault(source, _Group(source)).targets[root] = rel
    groups = list(by_source.values())
    for g in groups:  # the file's root stays the model's root (same listing, same summary)
        if g.source in st.slots and g.source in g.targets:
            g.targets = {g.source: g.targets.pop(g.source), **g.targets}
    covered = set(seen)
    listed = {st.resolve(n)[0]: n for n in reversed(_listed_names(st))}
    missing = tuple(listed[r] for r in st.slots if r not in covered)
    if strict and (missing or unexpected):
        raise CheckpointMismatchError(_strict_message(ck.path, missing, unexpected, names))
    ties, post = [], {}
    for g in groups:
        main = next(iter(g.targets))
        for other, rel in list(g.targets.items())[1:]:
            ties.append((main, other, g.targets[main] ^ rel))
            post[other] = (main, g.targets[main] ^ rel)
        g.targets = {main: g.targets[main]}
    _check_values(st, ck, groups, post)
    _check_ties(st, ties, ck.path)
    request, inits = _materialization(st, ck, groups, post)
    loaded = tuple(n for n in names if n in file_root)
    report = LoadReport(loaded, missing, unexpected, tuple(b for _, b, _ in ties))
    return _Plan(groups, ties, post, request, inits, report)


def _listed_names(st: ModelState) -> list[str]:
    from ._verbs import _names_under
    return list(_names_under(st.root))


def _strict_message(path: str, missing: tuple[str, ...], unexpected: tuple[str, ...],
                    names: list[str]) -> str:
    parts = [f"The checkpoint {path} does not match the model."]
    if missing:
        parts.append(f"Missing from the file: {', '.join(map(repr, missing[:10]))}"
                     f"{', ...' if len(missing) > 10 else ''}.")
    if unexpected:
        hint = closest(unexpected[0], names)
        parts.append(f"In the file but not the model: {', '.join(map(repr, unexpected[:10]))}"
                     f"{', ...' if len(unexpected) > 10 else ''}.{hint}")
    parts.append("Build the model from the spec the file was saved from (unifparam inspect "
                 "FILE shows it), or pass strict=False to load only the names both have.")
    return " ".join(parts)


def _check_values(st: ModelState, ck: Checkpoint, groups: list[_Group],
                  post: dict[str, tuple[str, bool]]) -> None:
    from ._verbs import _unify
    for g in groups:
        info = ck.tensors[g.source]
        for root, rel in _all_targets(g, post):
            slot = st.refresh(st.slots[root])
            file_shape = tuple(reversed(info.shape)) if rel else info.shape
            if rel and len(info.shape) != 2:
                raise CheckpointMismatchError(f"Parameter '{root}' is tied transposed but the "
                                              f"file's '{g.source}' is not 2-D.")
            if _unify(slot.shape, file_shape) is False:
                raise CheckpointMismatchError(
                    f"Parameter '{root}' has shape {fmt_shape(slot.shape)} in the model but "
                    f"{fmt_shape(file_shape)} in {ck.path} (stored as '{g.source}'"
                    f"{', transposed' if rel else ''}). Build the model with the sizes the "
                    f"file was saved with; nothing was loaded.")
            if info.dtype != slot.dtype:
                raise CheckpointMismatchError(
                    f"Parameter '{root}' is {slot.dtype} in the model but {info.dtype} in "
                    f"{ck.path}. Save the file from a {slot.dtype} model; nothing was loaded.")


def _all_targets(g: _Group, post: dict[str, tuple[str, bool]]) -> list[tuple[str, bool]]:
    main, rel = next(iter(g.targets.items()))
    return [(main, rel), *((o, rel ^ t) for o, (r, t) in post.items() if r == main)]


def _check_ties(st: ModelState, ties: list[tuple[str, str, bool]], path: str) -> None:
    from ._verbs import _check_tie
    if any(t for _, _, t in ties) and "transpose_tie" not in st.backend.capabilities:
        raise UnsupportedError(f"{path} records a transposed tie, which backend "
                               f"{st.backend.name!r} cannot make.")
    for a, b, t in ties:
        try:
            _check_tie(st, a, b, t)
        except TieError as e:
            raise CheckpointMismatchError(f"Cannot restore the tie recorded in {path}: {e}"
                                          ) from None


def _materialization(st: ModelState, ck: Checkpoint, groups: list[_Group],
                     post: dict[str, tuple[str, bool]]
                     ) -> tuple[Materialization | None, dict[str, np.ndarray | None]]:
    """The request that materializes the model from the file's shapes (None if not needed)."""
    from ._verbs import _unify, _values, _with_shape
    if all(s.state == MATERIALIZED for s in st.slots.values()):
        return None, {}
    planned: dict[str, Shape] = {}
    for g in groups:
        root, rel = next(iter(g.targets.items()))
        shape = ck.tensors[g.source].shape
        planned[root] = tuple(reversed(shape)) if rel else shape

    def root_of(name: str) -> tuple[str, bool]:
        root, t = st.resolve(name)
        main, t2 = post.get(root, (root, False))
        return main, t ^ t2

    def shape_of(name: str) -> Shape | None:
        root, t = root_of(name)
        shape = planned.get(root, st.slots[root].shape)
        return tuple(reversed(shape)) if t and shape is not None else shape

    layer_inputs: dict[str, Shape] = {}
    param_shapes: dict[str, Shape] = {r: s for r, s in planned.items()}
    for node in st.nodes.values():
        if not node.params or node.children:
            continue
        local = {k: shape_of(n) for k, n in node.params.items()}
        deferred = [n for n in node.params.values()
                    if st.slots[st.resolve(n)[0]].state == DEFERRED]
        x = None if node.spec is None else node.spec.minimal_input(
            {k: s for k, s in local.items() if s is not None})
        if x is None:
            if deferred:
                why = ("it is part of an adopted native model, whose layers unifparam cannot "
                       "size without an input" if node.spec is None else
                       "the file stores none of the parameters that fix its input size")
                raise CheckpointMismatchError(
                    f"Cannot materialize layer '{node.path}' ({node.kind}) from {ck.path}: "
                    f"{why} ({', '.join(map(repr, deferred))} unknown). Call "
                    f"unifparam.materialize(net, X) first, then load.")
            continue
        try:
            inferred, _ = node.spec.infer(x, node.path)  # type: ignore[union-attr]
        except InputShapeError as e:
            raise CheckpointMismatchError(f"{ck.path} does not fit layer '{node.path}': {e}"
                                          ) from None
        for k, shape in inferred.items():
            if _unify(local[k], shape) is False:
                raise CheckpointMismatchError(
                    f"Layer '{node.path}' ({node.kind}) would have {k} of shape "
                    f"{fmt_shape(shape)} but {ck.path} gives {fmt_shape(local[k])}.")
            root, t = root_of(node.params[k])
            param_shapes.setdefault(root, tuple(reversed(shape)) if t else shape)
        layer_inputs[node.path] = x
    inits: dict[str, np.ndarray | None] = {}
    for name, slot in st.slots.items():  # not in the file: filled as materialize would
        if name in planned or name in post or slot.initialized or slot.reg is None:
            continue
        shape = param_shapes.get(name, slot.shape)
        if shape is not None and None not in shape:
            inits[name] = _values(st, _with_shape(slot, shape), slot.reg)
    spec_model = st.spec is not None  # adopted models: shapes are known, only allocate
    request = Materialization(inputs=None, input_shapes=(),
                              layer_inputs=layer_inputs if spec_model else None,
                              param_shapes=param_shapes if spec_model else None,
                              skip_defaults=frozenset([*planned, *(n for n, v in inits.items()
                                                                   if v is not None)]))
    return request, inits


def _apply(model: Model, st: ModelState, plan: _Plan, arrays: dict[str, np.ndarray],
           progress: bool) -> None:
    from ._verbs import _apply_pending_ties, _write_values, tie
    for a, b, t in plan.ties:
        tie(model, a, b, transpose=t)
    if plan.request is not None:
        st.native = st.backend.materialize(st.native, plan.request)
        for slot in st.slots.values():
            st.refresh(slot)
        _apply_pending_ties(st)
        _write_values(st, {n: v for n, v in plan.inits.items() if v is not None})
        for name in plan.inits:
            st.slots[name].initialized = True
    total = sum(arrays[g.source].nbytes for g in plan.groups)
    with _progress(total, progress) as advance:
        for g in plan.groups:
            root, rel = next(iter(g.targets.items()))
            value = arrays[g.source]
            value = np.ascontiguousarray(value.T) if rel else value
            st.native = st.backend.write(st.native, st.slots[root].ref, value)
            st.slots[root].initialized = True
            advance(value.nbytes)


def _root_state(model: Model, verb: str) -> ModelState:
    if not isinstance(model, Model):
        raise TypeError(f"unifparam.{verb} takes a model handle from unifparam.build, got "
                        f"{type(model).__name__}. Wrap native models: unifparam.build(native).")
    if model.path:
        raise UnsupportedError(f"unifparam.{verb} works on the whole model, not layer "
                               f"'{model.path}'. Pass the model returned by unifparam.build.")
    return model._st


def _progress_enabled(progress: bool | None, size: int) -> bool:
    if progress is not None:
        return progress
    isatty = getattr(sys.stdout, "isatty", None)
    return size >= PROGRESS_THRESHOLD and callable(isatty) and bool(isatty())


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` bytes, or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("loading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stdout), transient=False) as bar:
        task = bar.add_task("load", total=total)
        yield lambda n: bar.advance(task, n)


def inspect_file(path: str | os.PathLike[str]) -> str:
    """A checkpoint's summary: names, shapes, dtypes, ties, size (no framework needed).

    When the file records its spec, the text includes exactly what ``unifparam.summary``
    printed for the saved model.

    >>> print(inspect_file("net.safetensors"))
    """
    from ._ckptinspect import describe
    return describe(_ckptfile.read(path))


__all__ = ["LoadReport", "PROGRESS_THRESHOLD", "inspect_file", "load", "save"]
