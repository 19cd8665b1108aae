"""Errors that do not depend on a backend (run once, not per backend in the conformance suite)."""

import pytest

import unifparam as up
from unifparam import nn
from unifparam._registry import BackendInfo
from unifparam.conformance._helpers import mlp


def test_unknown_backend_lists_registered_ones():
    with pytest.raises(up.BackendNotFoundError, match=r"Registered backends: .*torch"):
        up.build(mlp(), backend="tourch")


def test_backend_whose_framework_is_missing(monkeypatch):
    from unifparam import _registry
    fake = BackendInfo("ghost", ("ghost_framework_not_installed",), "ghost-framework", (),
                       "pip install ghost-framework", "ghost:Backend")
    monkeypatch.setattr(_registry, "registered", lambda: {"ghost": fake})
    _registry._load.cache_clear()
    with pytest.raises(up.BackendNotInstalledError, match="pip install ghost-framework"):
        up.build(mlp(), backend="ghost")


def test_spec_errors_are_typed():
    with pytest.raises(up.SpecError, match="activation"):
        nn.Dense(4, activation="relux")
    with pytest.raises(up.SpecError, match="units"):
        nn.Dense(0)
