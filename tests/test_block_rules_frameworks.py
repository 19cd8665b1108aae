"""The core's reserved block attribute names cover what the installed frameworks' module
classes use (issue 26): a new framework release adding a method shows up here."""

import pytest

from unifparam._blockrules import RESERVED


def _public(cls):
    return {n for n in dir(cls) if not n.startswith("_")}


def test_every_torch_module_attribute_is_reserved():
    torch = pytest.importorskip("torch")
    assert _public(torch.nn.Module) <= RESERVED


def test_flax_module_methods_a_block_attribute_would_shadow_are_reserved():
    linen = pytest.importorskip("flax.linen")
    nnx = pytest.importorskip("flax.nnx")
    assert {"params", "variables", "apply", "init", "bind", "setup", "param"} <= RESERVED
    assert {"train", "eval"} & _public(nnx.Module) <= RESERVED
    assert {"apply", "init", "bind"} <= _public(linen.Module)
