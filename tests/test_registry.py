"""Backend selection: argument, native type, UNIFPARAM_BACKEND; typed errors with hints."""

import pytest

import unifparam as up
from unifparam import _registry, nn


def test_torch_is_registered_through_its_entry_point():
    info = up.backends()["torch"]
    assert info.loader == "unifparam_torch._adapter:TorchBackend"
    assert info.installed()


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setenv("UNIFPARAM_BACKEND", "torch")
    assert up.build(nn.Sequential(nn.Dense(2))).backend == "torch"
    monkeypatch.setenv("UNIFPARAM_BACKEND", "torchh")
    with pytest.raises(up.BackendNotFoundError, match="Did you mean 'torch'"):
        up.build(nn.Sequential(nn.Dense(2)))


def test_detect_uses_class_names_only():
    fake = type("Module", (), {"__module__": "torch.nn.modules.module"})
    sub = type("MyNet", (fake,), {})
    assert _registry.detect(sub()) == "torch"
    assert _registry.detect(object()) is None


def test_unknown_native_object_is_a_clear_error():
    with pytest.raises(up.BackendNotFoundError, match="Cannot tell which framework"):
        up.build(object())


def test_unknown_backend_with_a_variant():
    with pytest.raises(up.BackendNotFoundError, match="Unknown backend"):
        up.get_backend("nope:jax")


def test_variant_of_a_backend_without_variants_is_rejected():
    with pytest.raises(up.BackendNotFoundError, match="has no variant 'jax'.*use 'torch'"):
        up.get_backend("torch:jax")


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(up.BackendNotFoundError, match="keras:tensorflow, keras:jax"):
        up.get_backend("keras:jaxx")


def test_a_broken_adapter_warns_and_is_left_out(monkeypatch):
    from importlib import metadata

    class Broken:
        name, value = "broken", "unifparam_broken:INFO"

        def load(self):
            raise ImportError("No module named 'unifparam_broken'")

    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group: [*real(group=group), Broken()])
    _registry.registered.cache_clear()
    try:
        with pytest.warns(up.BrokenBackendWarning, match="'broken'.*No module named"):
            found = _registry.registered()
        assert "broken" not in found and "torch" in found
    finally:
        _registry.registered.cache_clear()


def test_split_name():
    assert _registry.split_name("Keras:JAX") == ("keras", "jax")
    assert _registry.split_name("torch") == ("torch", None)
