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
    DeviceError,
    HandleAttributeError,
    InitializerError,
    InitializerSkippedWarning,
    InputShapeError,
    LayoutError,
    OutputError,
    ParamIndexError,
    SpecCycleError,
    SpecError,
    SpecTypeError,
    TieError,
    UnifparamError,
    UnknownNameError,
    UnsupportedError,
    ValueShapeError,
)

__version__ = "0.1.0"
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms)

#: Public names defined in submodules, imported on first use so that ``import unifparam``
#: stays near plain-Python speed: name -> module (``""``: the name is the submodule).
_ON_FIRST_USE = {
    "init": "", "nn": "", "ops": "", "dtypes": "", "cast": "_cast",
    "Backend": "_backend", "Converters": "_backend", "NativeLayer": "_backend",
    "NativeParam": "_backend", "Plan": "_backend", "Storage": "_backend",
    "default_seed": "_convert", "set_seed": "_convert", "to_numpy": "_convert",
    "placements": "_layout", "Model": "_model", "Param": "_model",
    "BackendInfo": "_registry", "get_backend": "_registry", "backends": "_registry",
    "summary": "_summary",
    "build": "_verbs", "gradients": "_verbs", "initialize": "_verbs",
    "materialize": "_verbs", "params": "_verbs", "tie": "_verbs",
    "save": "checkpoint", "load": "checkpoint", "inspect_file": "checkpoint",
    "LoadReport": "checkpoint", "plot_histograms": "_plots",
    "save_sharded": "_sharded", "load_sharded": "_sharded",
    "devices": "_devices", "num_gpus": "_devices", "to": "_verbs",
    "register_backend": "_registry",
    "save_arrays": "_arrays", "load_arrays": "_arrays",
}
_RENAMED = {"backends": "registered"}

if TYPE_CHECKING:  # what __getattr__ provides, for type checkers and IDEs
    from . import dtypes, init, nn, ops
    from ._arrays import load_arrays, save_arrays
    from ._backend import Backend, Converters, NativeLayer, NativeParam, Plan, Storage
    from ._cast import cast
    from ._convert import default_seed, set_seed, to_numpy
    from ._devices import devices, num_gpus
    from ._layout import placements
    from ._model import Model, Param
    from ._plots import plot_histograms
    from ._registry import BackendInfo, get_backend, register_backend
    from ._registry import registered as backends
    from ._sharded import load_sharded, save_sharded
    from ._summary import summary
    from ._verbs import build, gradients, initialize, materialize, params, tie, to
    from .checkpoint import LoadReport, inspect_file, load, save


def __getattr__(name: str) -> object:
    """Load the module defining ``name`` on first use (``import unifparam`` stays fast).

    >>> unifparam.build          # imports unifparam._verbs here, once
    <function build at ...>
    """
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'unifparam' has no attribute {name!r}")
    import importlib
    if module:
        value = getattr(importlib.import_module(f".{module}", __name__),
                        _RENAMED.get(name, name))
    else:
        value = importlib.import_module(f".{name}", __name__)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


__all__ = [
    "AlreadyInitializedWarning", "ArgumentError", "ArgumentValueError", "Backend",
    "BackendConflictError", "BackendInfo",
    "BackendNotFoundError", "BackendNotInstalledError", "BrokenBackendWarning", "Converters",
    "CheckpointError", "CheckpointFormatError", "CheckpointIOError", "CheckpointMismatchError",
    "CheckpointNotFoundError", "CheckpointPathError", "CheckpointPermissionError",
    "DataDependentError", "DeferredParameterError", "DeviceError", "HandleAttributeError",
    "InitializerError", "InitializerSkippedWarning", "InputShapeError",
    "LayoutError", "LoadReport", "Model", "NativeLayer", "NativeParam", "OutputError", "Param",
    "ParamIndexError", "Plan", "SpecCycleError", "SpecError", "SpecTypeError", "Storage",
    "TieError",
    "UnifparamError", "UnknownNameError", "UnsupportedError", "ValueShapeError", "backends",
    "build", "cast", "default_seed", "devices", "dtypes", "get_backend", "gradients", "init",
    "initialize", "inspect_file", "load", "load_arrays", "load_sharded", "materialize", "nn",
    "num_gpus", "ops", "params", "placements", "plot_histograms", "register_backend", "save",
    "save_arrays", "save_sharded", "set_seed", "summary", "tie", "to", "to_numpy",
]
