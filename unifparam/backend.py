"""Everything an adapter author needs, in one public module.

A backend adapter (``backends/unifparam_<framework>/`` here, or a package of its own) imports
from ``unifparam.backend`` and from the public modules ``unifparam.nn``,
``unifparam.roles`` and ``unifparam.errors``, never from a private ``unifparam._*``
module: those may change between releases, this module does not without a deprecation.

    >>> from unifparam.backend import Backend, BackendInfo, NativeParam, Plan, WRITE
    >>> class Mine(Backend):                  # doctest: +SKIP
    ...     name = "mine"
    ...     def build(self, spec): ...          # one method per primitive

``docs/backend-guide.md`` is the walk-through, with the contract of every name here.
"""

from __future__ import annotations

from ._backend import (
    ABSTRACT,
    ALIAS,
    CAPABILITIES,
    DEFAULT,
    DEFERRED,
    MATERIALIZED,
    WRITE,
    Backend,
    Converters,
    NativeLayer,
    NativeParam,
    Plan,
    Storage,
    default_loss,
    output_leaves,
)
from ._binding import Binding, bound
from ._buffers import kernel_perm, to_layout
from ._convert import TORCH_VIEWS, numpy_input, to_numpy, torch_numpy
from ._install import command as install_command
from ._registry import BackendInfo
from ._shards import canonical_shards, native_order, native_shard_maker
from .roles import STATISTICS, classify, family_of, local_name

__all__ = [
    # the protocol and what the core hands an adapter
    "Backend", "BackendInfo", "CAPABILITIES", "Converters", "NativeLayer", "NativeParam",
    "Plan", "Storage",
    # parameter states an adapter reports from status()
    "DEFERRED", "ABSTRACT", "MATERIALIZED",
    # how a planned storage gets its first values (Storage.fill)
    "DEFAULT", "WRITE", "ALIAS",
    # running a custom block's forward with the framework's arrays
    "Binding", "bound", "default_loss", "output_leaves",
    # values between canonical numpy and native layout
    "kernel_perm", "to_layout", "numpy_input", "to_numpy",
    # bfloat16 and float8 through a framework without a numpy bridge for them (torch):
    # moved as unsigned ints of their width
    "TORCH_VIEWS", "torch_numpy",
    # sharded values' blocks between canonical and native order
    "canonical_shards", "native_order", "native_shard_maker",
    # the install command that works from where unifparam was installed (a clone, a wheel)
    "install_command",
    # roles and logical axes (also public as unifparam.roles)
    "STATISTICS", "classify", "family_of", "local_name",
]
