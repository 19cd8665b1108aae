"""numpy, imported on first use, so that ``import unifparam`` stays near plain-Python speed.

    >>> from unifparam._lazy import np
    >>> np.zeros(2).shape          # numpy is imported here
    (2,)
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands in for a module until an attribute is asked for, then becomes its namespace."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        self.__dict__.update(module.__dict__)  # later lookups skip __getattr__
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


np: Any = LazyModule("numpy")
