"""Every failure unifparam reports, one class each, all under :class:`UnifparamError`.

Each class also subclasses the builtin a Python user would try to catch
(``LookupError``, ``ValueError``, ``ImportError``, ...). Messages name the parameter or
layer, the expected and received values, and the fix::

    >>> try:
    ...     unifparam.params(net)["0.weight"].numpy()
    ... except unifparam.DeferredParameterError as e:
    ...     print(e)
    Parameter '0.weight' has shape (256, None): its input size is not known yet. ...
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class UnifparamError(Exception):
    """Base class of every error raised by unifparam."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class BackendNotFoundError(UnifparamError, LookupError):
    """No backend of that name is registered."""


class BackendNotInstalledError(UnifparamError, ImportError):
    """The backend is known but its framework is not installed."""


class BackendConflictError(UnifparamError, RuntimeError):
    """The framework is already set up in this process in a way the request contradicts."""


class UnknownNameError(UnifparamError, KeyError, IndexError):
    """A parameter or layer name (or index) that the model does not have."""


class HandleAttributeError(UnifparamError, AttributeError):
    """A model or layer handle has no attribute of that name (``net[0].wieght``), or an
    attribute was assigned to a handle."""


class DeferredParameterError(UnifparamError, RuntimeError):
    """A value was asked of a parameter whose shape is not known yet."""


class InputShapeError(UnifparamError, ValueError):
    """An input does not fit the sizes a layer was given or has inferred."""


class DataDependentError(InputShapeError):
    """A block's forward branches on values, so its shapes need an example input."""


class TieError(UnifparamError, ValueError):
    """Two parameters cannot be tied (incompatible shapes, dtypes or kinds)."""


class ValueShapeError(UnifparamError, ValueError):
    """A value written to a parameter has the wrong shape."""


class InitializerError(UnifparamError, ValueError):
    """An initializer returned the wrong shape or dtype, or non-finite values."""


class SpecError(UnifparamError, ValueError):
    """A layer spec was given arguments it cannot use."""


class SpecCycleError(SpecError):
    """A layer spec that would contain itself (``self.me = self``, a Sequential in itself)."""


class SpecTypeError(SpecError, TypeError):
    """A layer spec argument of the wrong type (``Dense(None)``, ``Dropout("a")``)."""


class ArgumentError(UnifparamError, TypeError):
    """An argument of the wrong type: a verb's model, seed, selection, initializer, a value
    written to a parameter (strings, objects, complex numbers), a loss that is not callable."""


class ArgumentValueError(UnifparamError, ValueError):
    """An argument of the right type but an unusable value (a NaN seed, a value that
    overflows the parameter's dtype, a loss that is not a scalar)."""


class ParamIndexError(UnifparamError, IndexError):
    """An element index out of a parameter's range (``p[10, 0]`` on a (8, 4) weight), or an
    embedding index out of a table's range."""


class UnsupportedError(UnifparamError, NotImplementedError):
    """The backend lacks a capability this call needs."""


class DeviceError(UnifparamError, LookupError):
    """A device that does not exist for the backend (``"gpu:3"`` with one GPU), or a
    device name unifparam cannot read; the message lists the devices that exist."""


class OutputError(UnifparamError, TypeError):
    """A model output a verb cannot use (``gradients`` of an output with no float values)."""


class CheckpointError(UnifparamError):
    """Base class of every checkpoint failure (:func:`unifparam.save`, :func:`unifparam.load`)."""


class CheckpointFormatError(CheckpointError, ValueError):
    """The file is not a valid checkpoint: malformed, truncated, oversized header, bad names."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The file does not fit the model: names, shapes, dtypes or ties differ."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at that path (missing, a directory, a symlink loop, no directory)."""


class CheckpointPathError(CheckpointError, TypeError):
    """The path given is not a file path (``None``, a number, ...)."""


class CheckpointIOError(CheckpointError, OSError):
    """The operating system refused to read or write the file: read-only or full disk, I/O error.

    ``errno`` and ``filename`` are set as on the builtin ``OSError``.
    """

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename


class CheckpointPermissionError(CheckpointIOError, PermissionError):
    """No permission to read the checkpoint, or to write into its directory."""


class AlreadyInitializedWarning(UserWarning):
    """Re-initialization was asked without ``force_reinit=True``: values were kept."""


class InitializerSkippedWarning(UserWarning):
    """A registered initializer was not applied: the native model gave the parameters
    its framework's defaults by itself (called before unifparam could size it)."""


class BrokenBackendWarning(UserWarning):
    """A registered backend adapter could not be loaded; it is left out of the registry."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A "Did you mean ...?" phrase for ``name`` among ``candidates`` (empty if none close)."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


def fmt_names(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` of ``names`` quoted, then "..." if there are more.

    >>> fmt_names(["a", "b", "c"], 2)
    "'a', 'b', ..."
    """
    return ", ".join(repr(x) for x in names[:n]) + (", ..." if len(names) > n else "")


def fmt_shape(shape: tuple[int | None, ...] | None) -> str:
    """``(256, None)`` style text for a shape whose dims may be unknown."""
    if shape is None:
        return "(unknown)"
    inner = ", ".join("None" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"



class LayoutError(UnifparamError, ValueError):
    """A sharding layout cannot apply to a model on a mesh (axis, rank, divisibility)."""
