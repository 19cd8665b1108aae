"""Loading a checkpoint into another implementation of the same architecture: rules that
map the file's tensor names (and layouts) onto the model's, checked before any write.

A :class:`Rule` says which stored tensors (a regular expression on the whole name) fill
which model parameter (a template with ``\\1``-style groups, or a function of the match),
and how the stored value becomes the parameter's: ``transpose`` (reverse the axes), then
``part=(i, n)`` (the i-th of n equal pieces along the last axis: a fused q/k/v), then
``reshape`` (to the parameter's own shape, same size). A stored tensor may feed several
parameters (one rule each); a name no rule matches keeps its name.

    >>> rules = [Rule(r"h\\.(\\d+)\\.attn\\.c_attn\\.weight", r"blocks.\\1.query.weight",
    ...               part=(0, 3), reshape=True)]
    >>> up.load(net, "gpt2/", rename=rules).renamed[:1]
    (('h.0.attn.c_attn.weight', 'blocks.0.query.weight'),)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._ckptdir import CheckpointSet
from ._ckptfile import NAME, Checkpoint, TensorInfo, Tie
from .errors import CheckpointMismatchError, SpecError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Rule:
    """Stored tensors matching ``pattern`` fill the parameter named by ``to`` (None: skip)."""

    pattern: str
    to: str | Callable[[re.Match[str]], str] | None
    transpose: bool = False
    part: tuple[int, int] | None = None
    reshape: bool = False

    def target(self, name: str) -> tuple[bool, str | None]:
        """(matched, parameter name or None to skip)."""
        m = re.fullmatch(self.pattern, name)
        if m is None:
            return False, None
        if self.to is None:
            return True, None
        if not callable(self.to):
            return True, m.expand(self.to)
        try:
            return True, self.to(m)
        except _Skip:
            return True, None

    @property
    def plain(self) -> bool:
        return not (self.transpose or self.part or self.reshape)


Rules = Sequence[Rule] | Callable[[str], str | None]


@dataclass(frozen=True)
class _Source:
    name: str
    rule: Rule | None


@dataclass(eq=False)
class MappedCheckpoint(CheckpointSet):
    """A checkpoint seen under the model's names and layouts (its one part is the file)."""

    sources: dict[str, _Source] = field(default_factory=dict)

    def arrays(self, *, verify: bool | None = None) -> dict[str, Any]:
        base = self.parts[0].arrays(verify=verify)
        return {name: _convert(base[src.name], src.rule, self.tensors[name].shape)
                for name, src in self.sources.items()}


def _convert(value: Any, rule: Rule | None, shape: Shape) -> Any:
    if rule is None:
        return value
    if rule.transpose:
        value = value.T
    if rule.part:
        i, n = rule.part
        size = value.shape[-1] // n
        value = value[..., i * size:(i + 1) * size]
    if rule.reshape:
        value = value.reshape(shape)
    return value


def mapped(ck: Checkpoint, rules: Rules, shape_of: Callable[[str], Any]
           ) -> tuple[MappedCheckpoint, tuple[tuple[str, str], ...]]:
    """``ck`` under the model's names; the (stored name, parameter name) pairs renamed.
    ``shape_of(parameter)`` is the model's shape (for ``reshape``). Raises before any
    change: a bad rule, two stored tensors for one parameter, sizes that do not fit."""
    rule_list = _as_rules(rules)
    tensors: dict[str, TensorInfo] = {}
    sources: dict[str, _Source] = {}
    renamed: list[tuple[str, str]] = []
    for name in ck.order():
        info = ck.tensors[name]
        hits = [(rule, to) for rule in rule_list for ok, to in [rule.target(name)] if ok]
        for rule, to in hits or [(None, name)]:
            if to is None:
                continue
            _check_target(ck, name, to)
            if to in sources:
                raise CheckpointMismatchError(
                    f"The rename rules map both {sources[to].name!r} and {name!r} in {ck.path} "
                    f"to parameter {to!r}. Make the patterns match one stored tensor each.")
            shape = _shape(ck, name, info.shape, rule, to, shape_of)
            nbytes = info.end - info.begin if shape == info.shape else \
                math.prod(shape) * (info.end - info.begin) // max(1, math.prod(info.shape))
            tensors[to] = TensorInfo(info.dtype, shape, 0, nbytes)
            sources[to] = _Source(name, rule)
            if to != name or (rule is not None and not rule.plain):
                renamed.append((name, to))
    plain = {s.name: to for to, s in sources.items() if s.rule is None or s.rule.plain}
    ties = []
    for t in ck.ties:
        if t.name not in plain and t.root not in plain:
            continue
        new_name = _plain_target(rule_list, t.name, ck)
        if t.root not in plain or new_name is None:
            raise CheckpointMismatchError(
                f"{ck.path} ties {t.name!r} to {t.root!r}, but the rename rules change the "
                f"layout of one of them or skip it. Rename tied tensors with plain rules.")
        ties.append(Tie(new_name, plain[t.root], t.transpose, t.explicit))
    view = MappedCheckpoint(
        ck.path, ck.size, 0, tensors, {k: v for k, v in ck.metadata.items() if k != "spec"},
        ties=ties, trainable={plain[n]: v for n, v in ck.trainable.items() if n in plain},
        verify=ck.verify, writer=ck.writer, parts=[ck], sources=sources)
    return view, tuple(renamed)


def _as_rules(rules: Rules) -> list[Rule]:
    if callable(rules) and not isinstance(rules, Rule):
        fn = rules
        return [Rule(r".+", lambda m: _call(fn, m[0]))]
    if isinstance(rules, Rule):
        rules = [rules]
    out = []
    for rule in rules:
        if not isinstance(rule, Rule):
            raise SpecError(f"rename takes unifparam.checkpoint.Rule objects or a function "
                            f"name -> name, got {rule!r}.")
        try:
            re.compile(rule.pattern)
        except re.error as e:
            raise SpecError(f"Rename rule pattern {rule.pattern!r} is not a regular "
                            f"expression: {e}.") from None
        if rule.part is not None and not (len(rule.part) == 2 and 0 <= rule.part[0]
                                          < rule.part[1]):
            raise SpecError(f"Rename rule {rule.pattern!r}: part=(i, n) needs 0 <= i < n, "
                            f"got {rule.part!r}.")
        out.append(rule)
    return out


class _Skip(Exception):
    pass


def _call(fn: Callable[[str], str | None], name: str) -> str:
    to = fn(name)
    if to is None:
        raise _Skip
    return to


def _plain_target(rules: list[Rule], name: str, ck: Checkpoint) -> str | None:
    for rule in rules:
        ok, to = rule.target(name)
        if ok and to is None:
            return None
        if ok:
            return to if rule.plain else None
    return name


def _check_target(ck: Checkpoint, name: str, to: Any) -> None:
    if not isinstance(to, str) or not NAME.fullmatch(to):
        raise CheckpointMismatchError(f"The rename rules map {name!r} in {ck.path} to "
                                      f"{str(to)[:80]!r}, which is not a parameter name.")


def _shape(ck: Checkpoint, name: str, shape: Shape, rule: Rule | None, to: str,
           shape_of: Callable[[str], Any]) -> Shape:
    if rule is None:
        return shape
    if rule.transpose:
        shape = tuple(reversed(shape))
    if rule.part:
        i, n = rule.part
        if not shape or shape[-1] % n:
            raise CheckpointMismatchError(
                f"Rename rule {rule.pattern!r}: {name!r} in {ck.path} has shape {shape}, "
                f"whose last axis does not split into {n} equal parts.")
        shape = (*shape[:-1], shape[-1] // n)
    if rule.reshape:
        want = shape_of(to)
        if want is None or any(d is None for d in want):
            raise CheckpointMismatchError(
                f"Rename rule {rule.pattern!r} reshapes {name!r} to parameter {to!r}, whose "
                f"shape is not known yet. Materialize the model first.")
        want = tuple(int(d) for d in want)
        if math.prod(want) != math.prod(shape):
            raise CheckpointMismatchError(
                f"Rename rule {rule.pattern!r}: {name!r} in {ck.path} holds {math.prod(shape)}"
                f" values as {shape}, parameter {to!r} of shape {want} holds "
                f"{math.prod(want)}.")
        shape = want
    return shape
