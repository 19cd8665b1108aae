"""Flax NNX's own state semantics, kept through unifparam on adopted modules.

Each case mirrors a Flax NNX state/split/merge test (``flax/nnx/tests/module_test.py``,
``graph_utils_test.py``, ``variable_test.py``), rewritten to go through unifparam; the
upstream behaviour is named in each docstring.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax.nnx")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import unifparam as up  # noqa: E402
from unifparam import init  # noqa: E402

X = np.random.default_rng(0).random((2, 3), dtype=np.float32)


class Ema(nnx.Variable):
    """A custom variable type, as Flax's docs define them (not an nnx.Param)."""


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.ema = Ema(jnp.full((4,), 0.5))
        self.calls = nnx.Variable(jnp.zeros((), jnp.int32))  # a counter, not a parameter
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.seen = nnx.Intermediate(jnp.zeros((4,)))  # sown-style values and a cache:
        self.cache = nnx.Cache(jnp.zeros((2, 4)))     # state, not parameters

    def __call__(self, x):
        h = self.a(x) * self.ema[...]
        return self.b(h) if hasattr(self, "b") else h


def _state_leaves(module, *types) -> int:
    return len(jax.tree.leaves(nnx.state(module, *types)))


def test_custom_variable_types_are_listed_saved_and_loaded(tmp_path):
    """variable_test.py / module_test.py: a custom Variable type is part of nnx.state."""
    m = Model(nnx.Rngs(0))
    net = up.build(m)
    listed = up.params(net)
    assert set(listed) == {"a.weight", "a.bias", "ema"}
    assert listed["ema"].trainable is False and listed["ema"].shape == (4,)
    assert len(listed) == _state_leaves(m, nnx.Param, Ema)
    path = str(tmp_path / "m.safetensors")
    up.save(net, path)
    other = Model(nnx.Rngs(1))
    other.ema.set_value(jnp.zeros((4,)))
    up.load(up.build(other), path)
    np.testing.assert_array_equal(np.asarray(other.ema.get_value()), np.full(4, 0.5))
    np.testing.assert_array_equal(np.asarray(other.a.kernel.get_value()),
                                  np.asarray(m.a.kernel.get_value()))


def test_custom_variables_get_no_gradient():
    """nnx.grad differentiates nnx.Param only (its default filter)."""
    net = up.build(Model(nnx.Rngs(0)))
    assert sorted(up.gradients(net, X)) == ["a.bias", "a.weight"]


def test_rng_state_intermediates_and_counters_are_not_parameters():
    """module_test.py: rng streams, intermediates and caches are state, not parameters."""
    m = Model(nnx.Rngs(0))
    net = up.build(m)
    assert _state_leaves(m, nnx.Intermediate) == _state_leaves(m, nnx.Cache) == 1
    assert _state_leaves(m, nnx.RngState) > 0
    assert set(up.params(net)) == {"a.weight", "a.bias", "ema"}


def test_a_submodule_added_after_build_is_listed():
    """module_test.py: an attribute assigned after construction is in nnx.state."""
    m = Model(nnx.Rngs(0))
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), select="a.weight", force_reinit=True)
    m.b = nnx.Linear(4, 2, rngs=nnx.Rngs(1))
    listed = up.params(net)
    assert set(listed) == {"a.weight", "a.bias", "ema", "b.weight", "b.bias"}
    assert len(listed) == _state_leaves(m, nnx.Param, Ema)
    assert repr(listed["a.weight"].init) == "Constant(value=0.25)"  # registration kept
    assert np.all(listed["a.weight"].numpy() == 0.25)
    assert net.b.weight.shape == (2, 4)
    assert sorted(up.gradients(net, X)) == ["a.bias", "a.weight", "b.bias", "b.weight"]


def test_split_then_merge_gives_a_module_with_the_same_listing_and_values():
    """graph_utils_test.py test_split_merge: nnx.merge(*nnx.split(m)) is an equal module."""
    m = Model(nnx.Rngs(0))
    merged = nnx.merge(*nnx.split(m))
    a, b = up.params(up.build(m)), up.params(up.build(merged))
    assert set(a) == set(b)  # (merge orders a module's attributes by name)
    for name in a:
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
