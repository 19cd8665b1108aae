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
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _ckptfile, nn
from ._backend import MATERIALIZED, Plan
from ._ckptfile import Checkpoint
from ._lazy import np
from ._locking import serialized
from ._model import Model, not_ready
from ._plan import apply, contiguous, for_shapes
from ._state import ModelState, flip, unify
from ._ties import apply_tie, check_tie
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

Shape = nn.Shape
#: Files at least this large show a progress bar when stdout is a terminal.
PROGRESS_THRESHOLD = 64 * 2**20


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load` did: names loaded, model names the file lacks, file names unused."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    tied: tuple[str, ...] = ()  # names tied by this load, as the file records
    #: (name, file dtype, model dtype) of each parameter cast on the way in
    cast: tuple[tuple[str, str, str], ...] = ()
    #: False for a file another tool wrote: no digests recorded, values read as they are.
    verified: bool = True
    writer: str = "unifparam"  # who wrote the file (see inspect_file)
    #: (stored name, parameter name) pairs that ``rename`` rules mapped
    renamed: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        extra = "" if self.verified else f", verified=False, writer={self.writer!r}"
        casts = f", cast={[f'{n}: {a}->{b}' for n, a, b in self.cast]}" if self.cast else ""
        return (f"LoadReport(loaded={len(self.loaded)}, missing={list(self.missing)}, "
                f"unexpected={list(self.unexpected)}{extra}{casts})")


# ---- save -------------------------------------------------------------------------------
@serialized
def save(model: Model, path: str | os.PathLike[str]) -> None:
    """Write every parameter of ``model`` to ``path`` (safetensors), atomically.

    Each storage is written once under its canonical name, in canonical layout; ties,
    trainability, the spec and the unifparam version go to the metadata.

    >>> unifparam.save(net, "net.safetensors")
    """
    arrays, metadata = contents(_root_state(model, "save"))
    _ckptfile.write(path, arrays, metadata)


def contents(st: ModelState, fetch: Callable[[ModelState, str], Callable[[], Any]] | None = None
             ) -> tuple[dict[str, _ckptfile.Pending], dict[str, str]]:
    """What a save writes: each storage (fetched when written) and the metadata."""
    from . import __version__
    from ._specio import spec_to_json

    for name, slot in st.slots.items():
        shape, state = st.status(name)
        if state != MATERIALIZED:
            raise DeferredParameterError(not_ready(name, shape, state) + " Then save it.")
        if st.dtype(name) not in _ckptfile.CODES:
            raise UnsupportedError(f"Parameter '{name}' has dtype {slot.dtype}, which the "
                                   f"checkpoint format cannot store.")
    arrays = {name: _ckptfile.Pending(st.dtype(name), tuple(st.status(name)[0]),  # type: ignore[arg-type]
                                      (fetch or _fetch)(st, name))
              for name in st.slots}  # read one at a time, as they are written
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
    return arrays, metadata


def _fetch(st: ModelState, name: str) -> Callable[[], Any]:
    slot = st.slots[name]
    return lambda: np.asarray(st.backend.read(st.native, slot.ref))  # never cast: the writer
    # refuses a value whose dtype is not the one declared


# ---- load -------------------------------------------------------------------------------
@dataclass
class _Group:
    """One stored tensor and the model storages it fills: root -> transposed-from-file?"""

    source: str
    targets: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Match:
    """How a file's tensors map onto a model, validated: what load will do."""

    groups: list[_Group]
    ties: list[tuple[str, str, bool]]            # (root, other root, transpose) to tie
    post: dict[str, tuple[str, bool]]            # pre-tie root -> (post-tie root, transpose)
    report: LoadReport


@serialized
def load(model: Model, path: str | os.PathLike[str], *, strict: bool = True,
         progress: bool | None = None, verify: bool = True, rename: Any = None,
         cast: bool = True) -> LoadReport:
    """Load the checkpoint at ``path`` into ``model`` (any backend, same spec).

    ``path`` is a file or a directory (``model.safetensors``, or the index and shards that
    ``save_pretrained`` and :func:`unifparam.save_sharded` write). A file another tool wrote
    loads as plain tensors under their stored names (``report.verified`` is False: it
    records no digests). ``rename`` maps the file's names and layouts onto another
    implementation's (a list of :class:`Rule`, or a function name -> name or None), checked
    before any change and listed in ``report.renamed``.

    A model whose shapes are unknown is materialized from the file's shapes (no example
    input). Ties recorded in the file are restored. ``strict=False`` loads the names both
    have and reports the rest; shape and dtype mismatches always fail, before any change.
    ``verify`` checks each tensor's recorded digest (a torn or altered file is an error,
    never values); ``verify=False`` skips it for speed. A tensor stored in another dtype
    than the model's is cast to the model's (rounded to nearest even, as
    ``load_state_dict`` does) and listed in ``LoadReport.cast``; ``cast=False`` refuses
    any cast. A cast into integer storage must be exact.

    >>> report = unifparam.load(net, "net.safetensors", strict=False)
    >>> report.missing, report.unexpected
    ((), ())
    """
    return load_into(model, path, strict=strict, progress=progress, verify=verify,
                     rename=rename, cast=cast)


def load_into(model: Model, path: str | os.PathLike[str], *, strict: bool = True,
              progress: bool | None = None, verify: bool = True, mesh: Any = None,
              layout: Any = None, rename: Any = None, cast: bool = True) -> LoadReport:
    """:func:`load`, placing storages not materialized yet on ``mesh`` by ``layout``."""
    from ._ckptdir import open_checkpoint
    st = _root_state(model, "load")
    ck = open_checkpoint(path, verify=verify)
    renamed: tuple[tuple[str, str], ...] = ()
    if rename is not None:
        from ._ckptnames import mapped
        ck, renamed = mapped(ck, rename, lambda name: _model_shape(st, name))
    match = _match(st, ck, strict, cast)
    if renamed:
        match.report = dataclasses.replace(match.report, renamed=renamed)
    todo = [r for r in st.slots if st.state_of(r) != MATERIALIZED]
    if todo:  # checked on the state before the file's ties are made: nothing changes yet
        _planned(st, ck, match, todo, pre_tie=True, mesh=mesh, layout=layout)
    arrays = ck.arrays()  # memory-mapped: bytes are read as they are copied into storage
    pages = _Pages(ck)
    with _progress(sum(arrays[g.source].nbytes for g in match.groups),
                   _progress_enabled(progress, ck.size)) as advance:
        writes = {root: _cast_step(_reader(arrays[g.source], rel, advance, pages),
                                   st.dtype(root))
                  for g in match.groups for root, rel in g.targets.items()}
        for a, b, t in match.ties:
            apply_tie(st, a, b, t)
        if todo:
            todo = [r for r in st.slots if st.state_of(r) != MATERIALIZED]
            plan, values = _planned(st, ck, match, todo, pre_tie=False, values=writes,
                                    mesh=mesh, layout=layout)
            apply(st, plan, values)
        for root, make in writes.items():  # storages that already had memory
            if root not in (plan.storages if todo else ()):
                st.call("write", st.slots[root].ref, make())
                st.slots[root].initialized = True
        pages.settle()
    return match.report


def _cast_step(read: Callable[[], Any], dtype: str) -> Callable[[], Any]:
    """``read``, its values cast to the model's ``dtype`` when the file holds another."""
    from .dtypes import cast

    def cast_read(*index: Any) -> Any:
        value = read(*index)
        return value if value.dtype.name == dtype else cast(value, dtype)
    return cast_read
def _model_shape(st: ModelState, name: str) -> Any:
    if name not in st.slots and name not in st.aliases:
        return None
    root, transposed = st.resolve(name)
    return flip(st.status(root)[0], transposed)


def _reader(array: Any, transposed: bool, advance: Callable[[int], None], pages: _Pages
            ) -> Callable[[], Any]:
    def read(index: Any = None) -> Any:
        if index is not None:  # one block of a storage placed on a mesh
            return np.ascontiguousarray((array.T if transposed else array)[tuple(index)])
        pages.settle()  # the tensor read before has been written by now
        if transposed:
            value = contiguous(array.T)
            pages.release(array)
        else:
            value = pages.track(array)
        advance(value.nbytes)
        return value
    return read


class _Pages:
    """Unmaps each tensor's file pages once the backend has copied it: without this a load
    into Keras or Flax peaked at twice the parameter bytes (the mapped file's pages count in
    RSS). A tensor the backend adopted (it keeps a reference to the array, as torch does)
    keeps its pages."""

    def __init__(self, ck: Checkpoint):
        self.ck = ck
        self.pending: list[list[Any]] = []  # [array, its reference count once handed out]

    def release(self, array: Any) -> None:
        self.ck.release(array)

    def track(self, array: Any) -> Any:
        entry = [array, 0]
        self.pending.append(entry)
        entry[1] = sys.getrefcount(array)  # the same holders settle() sees, but for read()'s
        return array                       # argument where settle() has its loop variable

    def settle(self) -> None:
        for entry in self.pending:
            array = entry[0]
            if sys.getrefcount(array) <= entry[1]:  # nobody took a reference: it was copied
                self.ck.release(array)
        self.pending.clear()


def _planned(st: ModelState, ck: Checkpoint, match: _Match, todo: list[str], pre_tie: bool,
             values: dict[str, Any] | None = None, mesh: Any = None, layout: Any = None
             ) -> tuple[Plan, dict[str, Any]]:
    """The plan that materializes ``todo`` from the file's shapes (before or after its ties)."""
    shapes: dict[str, Shape] = {}
    for g in match.groups:
        root, rel = next(iter(g.targets.items()))
        shapes[root] = flip(ck.tensors[g.source].shape, rel)
        if pre_tie:
            for other, (main, t) in match.post.items():
                if main == root:
                    shapes[other] = flip(shapes[root], t)
    try:
        return for_shapes(st, todo, shapes, {}, False, values=values, dry=pre_tie, mesh=mesh,
                          layout=layout)
    except InputShapeError as e:
        raise CheckpointMismatchError(f"Cannot materialize the model from {ck.path}: {e} "
                                      f"Nothing was loaded.") from None


def _match(st: ModelState, ck: Checkpoint, strict: bool, cast: bool = True) -> _Match:
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
    listed = {st.resolve(n)[0]: n for n in reversed(st.names_under(st.root))}
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
    casts = _check_values(st, ck, groups, post, cast)
    _check_ties(st, ties, ck.path)
    loaded = tuple(n for n in names if n in file_root)
    report = LoadReport(loaded, missing, unexpected, tuple(b for _, b, _ in ties), cast=casts,
                        verified=ck.verified, writer=ck.writer)
    return _Match(groups, ties, post, report)


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
                  post: dict[str, tuple[str, bool]], cast: bool = True
                  ) -> tuple[tuple[str, str, str], ...]:
    """Shapes and dtypes of the file against the model; the casts load will make."""
    casts = []
    for g in groups:
        info = ck.tensors[g.source]
        for root, rel in _all_targets(g, post):
            shape = st.status(root)[0]
            file_shape = flip(info.shape, rel)
            if rel and len(info.shape) != 2:
                raise CheckpointMismatchError(f"Parameter '{root}' is tied transposed but the "
                                              f"file's '{g.source}' is not 2-D.")
            if unify(shape, file_shape) is False:
                raise CheckpointMismatchError(
                    f"Parameter '{root}' has shape {fmt_shape(shape)} in the model but "
                    f"{fmt_shape(file_shape)} in {ck.path} (stored as '{g.source}'"
                    f"{', transposed' if rel else ''}). Build the model with the sizes the "
                    f"file was saved with; nothing was loaded.")
            dtype = st.dtype(root)
            if info.dtype != dtype:
                _check_cast(ck, g.source, root, info.dtype, dtype, cast)
                casts.append((root, info.dtype, dtype))
    return tuple(casts)


def _check_cast(ck: Checkpoint, source: str, root: str, have: str, want: str,
                cast: bool) -> None:
    """Raise unless the file's ``have`` values of ``source`` may be cast to ``want``."""
    from .dtypes import cast as cast_to
    from .dtypes import is_float
    from .errors import ArgumentValueError
    if not cast:
        raise CheckpointMismatchError(
            f"Parameter '{root}' is {want} in the model but {have} in {ck.path} (stored as "
            f"'{source}'), and load(..., cast=False) refuses casts. Load with cast=True to "
            f"round it to {want}, or cast the model first: unifparam.cast(net, {have!r}). "
            f"Nothing was loaded.")
    alg = ck.digests.get(source, ("", ""))[0]
    if alg and not _ckptfile.DIGESTS[alg][2]:
        raise CheckpointMismatchError(
            f"Parameter '{root}' is {want} in the model but {have} in {ck.path} (stored as "
            f"'{source}'), whose {alg} digest does not cover dtypes (an older unifparam "
            f"file): a cast could hide an edited header. Load it into a model of its dtype "
            f"(unifparam.cast(net, {have!r})) and save it again. Nothing was loaded.")
    if not is_float(want):  # integer storage: every value must be exact (checked now)
        try:
            cast_to(ck.arrays()[source], want)
        except ArgumentValueError as e:
            raise CheckpointMismatchError(
                f"Parameter '{root}' is {want} in the model but {have} in {ck.path} (stored "
                f"as '{source}'), and its values do not cast exactly: {e} Nothing was "
                f"loaded.") from None


def _all_targets(g: _Group, post: dict[str, tuple[str, bool]]) -> list[tuple[str, bool]]:
    main, rel = next(iter(g.targets.items()))
    return [(main, rel), *((o, rel ^ t) for o, (r, t) in post.items() if r == main)]


def _check_ties(st: ModelState, ties: list[tuple[str, str, bool]], path: str) -> None:
    if any(t for _, _, t in ties) and "transpose_tie" not in st.backend.capabilities:
        raise UnsupportedError(f"{path} records a transposed tie, which backend "
                               f"{st.backend.name!r} cannot make.")
    for a, b, t in ties:
        try:
            check_tie(st, a, b, t)
        except TieError as e:
            raise CheckpointMismatchError(f"Cannot restore the tie recorded in {path}: {e}"
                                          ) from None


def _root_state(model: Model, verb: str) -> ModelState:
    if not isinstance(model, Model):
        arrays = hasattr(model, "shape") or isinstance(model, (list, tuple, dict))
        raise UnsupportedError(f"unifparam.{verb} takes a model handle from unifparam.build, got "
                        f"{type(model).__name__}. " + (
                            f"For an array, a list or a dict of arrays use unifparam."
                            f"{verb}_arrays(...)." if arrays else
                            "Wrap native models: unifparam.build(native)."))
    if model.path:
        raise UnsupportedError(f"unifparam.{verb} works on the whole model, not layer "
                               f"'{model.path}'. Pass the model returned by unifparam.build.")
    from ._sync import check
    check(model._st)
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

    ``path`` is a file or a checkpoint directory; the summary says who wrote it and whether
    its values are verified by digests.

    When the file records its spec, the text includes exactly what ``unifparam.summary``
    printed for the saved model.

    >>> print(inspect_file("net.safetensors"))
    """
    from ._ckptdir import open_checkpoint
    from ._ckptinspect import describe
    return describe(open_checkpoint(path))


from ._ckptnames import Rule  # noqa: E402  (re-exported: unifparam.checkpoint.Rule)

__all__ = ["LoadReport", "PROGRESS_THRESHOLD", "Rule", "inspect_file", "load", "save"]
