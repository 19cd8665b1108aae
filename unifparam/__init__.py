"""unifparam: one API for neural-network parameters over PyTorch, Keras 3 and Flax.

    >>> import numpy as np, unifparam
    >>> from unifparam import nn, init
    >>> net = unifparam.build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)))
    >>> unifparam.initialize(net, init.Normal(std=0.01), seed=0)
    >>> net(np.ones((2, 4), np.float32)).shape
    (2, 1)
    >>> list(unifparam.params(net))
    ['0.weight', '0.bias', '1.weight', '1.bias']

The backend comes from ``build(..., backend=)``, the native model's type, or the
``UNIFPARAM_BACKEND`` environment variable. This package never imports a framework.
"""

from . import init, nn, ops
from ._backend import Backend, Converters, NativeLayer, NativeParam, Plan, Storage
from ._convert import default_seed, set_seed, to_numpy
from ._layout import placements
from ._model import Model, Param
from ._registry import BackendInfo, get_backend
from ._registry import registered as backends
from ._summary import summary
from ._verbs import build, gradients, initialize, materialize, params, tie
from .errors import (
    AlreadyInitializedWarning,
    ArgumentError,
    ArgumentValueError,
    BackendConflictError,
    BackendNotFoundError,
    BackendNotInstalledError,
    BrokenBackendWarning,
    CheckpointError,
    CheckpointFormatError,
    CheckpointIOError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointPathError,
    CheckpointPermissionError,
    DataDependentError,
    DeferredParameterError,
    InitializerError,
    InputShapeError,
    LayoutError,
    OutputError,
    ParamIndexError,
    SpecError,
    SpecTypeError,
    TieError,
    UnifparamError,
    UnknownNameError,
    UnsupportedError,
    ValueShapeError,
)

__version__ = "0.1.0"

_ON_FIRST_USE = {"save": "checkpoint", "load": "checkpoint", "inspect_file": "checkpoint",
                 "LoadReport": "checkpoint", "plot_histograms": "_display",
                 "save_sharded": "_sharded", "load_sharded": "_sharded"}


def __getattr__(name: str) -> object:
    """Checkpoint and plotting functions load their module on first use (fast import)."""
    if name in _ON_FIRST_USE:
        import importlib
        value = getattr(importlib.import_module(f".{_ON_FIRST_USE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unifparam' has no attribute {name!r}")

__all__ = [
    "AlreadyInitializedWarning", "ArgumentError", "ArgumentValueError", "Backend",
    "BackendConflictError", "BackendInfo",
    "BackendNotFoundError", "BackendNotInstalledError", "BrokenBackendWarning", "Converters",
    "CheckpointError", "CheckpointFormatError", "CheckpointIOError", "CheckpointMismatchError",
    "CheckpointNotFoundError", "CheckpointPathError", "CheckpointPermissionError",
    "DataDependentError", "DeferredParameterError", "InitializerError", "InputShapeError",
    "LayoutError", "LoadReport", "Model", "NativeLayer", "NativeParam", "OutputError", "Param",
    "ParamIndexError", "Plan", "SpecError", "SpecTypeError", "Storage", "TieError",
    "UnifparamError", "UnknownNameError", "UnsupportedError", "ValueShapeError", "backends",
    "build", "default_seed", "get_backend", "gradients", "init", "initialize", "inspect_file",
    "load", "load_sharded", "materialize", "nn", "ops", "params", "placements",
    "plot_histograms", "save", "save_sharded", "set_seed", "summary", "tie", "to_numpy",
]
