"""A block's own code checked on the core's trace: its ``forward`` exists and takes the
inputs given, returns arrays, and its ``build`` and ``forward`` failing on shapes becomes a
typed error naming the block, its input and its parameters (not numpy's raw error).

    >>> check_forward(block, "encoder", 2)   # doctest: +SKIP
    Traceback (most recent call last):
    ...
    unifparam.errors.SpecTypeError: Block 'encoder' (Enc): forward(self, x) cannot take 2 inputs...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from . import nn
from .errors import (
    InputShapeError,
    OutputError,
    SpecError,
    SpecTypeError,
    UnifparamError,
    fmt_shape,
)

Shape = nn.Shape


def _where(block: nn.Block, path: str) -> str:
    return f"Block '{path or 'model'}' ({type(block).__name__})"


def check_forward(block: nn.Block, path: str, n: int) -> None:
    """A typed error naming the block if its ``forward`` is missing or cannot take ``n``
    inputs."""
    if type(block).forward is nn.Block.forward:
        raise SpecTypeError(f"{_where(block, path)} defines no forward: add "
                            f"def forward(self, x): ... returning its output.")
    sig = _signature(type(block).forward)
    if sig is None:  # no signature to read (a builtin): the call decides
        return
    try:
        sig.bind(block, *range(n))
    except TypeError:
        raise SpecTypeError(f"{_where(block, path)}: forward{sig} cannot take {n} input"
                            f"{'s' if n != 1 else ''}. Give forward one parameter per input "
                            f"(def forward(self, x)), or call it with the inputs it "
                            f"declares.") from None


@functools.lru_cache(maxsize=256)
def _signature(forward: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(forward)
    except (TypeError, ValueError):
        return None


def check_output(block: nn.Block, path: str, out: Any) -> None:
    """A typed error naming the block if ``forward`` returned something that is not arrays
    (None, a string, an object)."""
    leaves = list(out.values()) if isinstance(out, dict) else \
        list(out) if isinstance(out, (tuple, list)) else [out]
    for leaf in leaves:
        if isinstance(leaf, (tuple, list, dict)):
            check_output(block, path, leaf)
        elif not isinstance(leaf, (np.ndarray, np.generic, int, float)) or isinstance(leaf, bool):
            raise OutputError(f"{_where(block, path)}: forward returned "
                              f"{type(leaf).__name__} {leaf!r:.40}; it must return arrays (the "
                              f"output of a layer or of unifparam.ops). Is a return missing?")


def guarded(block: nn.Block, path: str, what: str, shapes: tuple[Shape, ...],
             call: Callable[[], Any]) -> Any:
    """``call()`` (the block's build or forward on the trace); a failure of the user's code
    on shapes becomes a typed error naming the block, its input and its parameters."""
    try:
        return call()
    except SpecError as e:
        if what != "build":
            raise
        raise type(e)(f"{_where(block, path)}: its build failed: {e}") from None
    except UnifparamError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        own = ", ".join(f"'{nn.join(path, n)}' {fmt_shape(p.shape)}"
                        for n, p in block.own_parameters()) or "none"
        x = ", ".join(fmt_shape(s) for s in shapes)
        err = InputShapeError if what == "forward" and not isinstance(e, TypeError) \
            else SpecTypeError if isinstance(e, TypeError) else SpecError
        raise err(f"{_where(block, path)}: its {what} failed on input {x} with its "
                  f"parameters {own}: {type(e).__name__}: {e}. Check the shapes the block "
                  f"declares (or fills in build) against its input.") from e
