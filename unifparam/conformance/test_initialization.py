"""Initialization: P7-P9, P12-P14, L13, seeded values."""

import math

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs, lazy_mlp, mlp


def _net(build):
    net = build(mlp())
    net(inputs(2, 4))
    return net


def test_P7_builtin_normal_then_constant_with_force_reinit(build):
    net = build(nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(1)))
    net(inputs(2, 64))
    up.initialize(net, init.Normal(std=0.01), force_reinit=True)
    w = net[0].weight.numpy()
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    assert not net[0].bias.numpy().any()  # biases zero
    up.initialize(net, init.Constant(1), force_reinit=True)
    assert (net[0].weight.numpy() == 1).all() and (net[1].weight.numpy() == 1).all()
    assert not net[0].bias.numpy().any()


def test_P7_reinit_without_force_warns_and_keeps_values(build):
    net = _net(build)
    up.initialize(net, init.Constant(3))
    before = net[0].weight.numpy()
    with pytest.warns(up.AlreadyInitializedWarning, match="force_reinit"):
        up.initialize(net, init.Constant(5))
    np.testing.assert_array_equal(net[0].weight.numpy(), before)


def test_P8_different_initializers_per_block(build):
    net = _net(build)
    up.initialize(net[0], init.XavierUniform(), force_reinit=True)
    up.initialize(net[1], init.Constant(42), force_reinit=True)
    bound = math.sqrt(6 / (4 + 8))
    w0 = net[0].weight.numpy()
    assert np.abs(w0).max() <= bound and w0.std() > bound / 4
    np.testing.assert_array_equal(net[1].weight.numpy(), np.full((1, 8), 42, np.float32))


class MyInit(init.Initializer):
    """P9: U(5, 10) w.p. 1/4, 0 w.p. 1/2, U(-10, -5) w.p. 1/4; reports what it fills."""

    def sample(self, target, rng):
        print("Init", target.name, target.shape)
        data = rng.uniform(-10, 10, target.shape)
        return data * (np.abs(data) >= 5)


def test_P9_custom_initializer(build, capsys):
    net = build(nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(1)))
    net(inputs(2, 4))
    capsys.readouterr()
    up.initialize(net, MyInit(), force_reinit=True)
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (64, 4)",
                                                    "Init 1.weight (1, 64)"]
    w = net[0].weight.numpy()
    assert ((w == 0) | ((np.abs(w) >= 5) & (np.abs(w) <= 10))).all()
    assert 0.3 < (w == 0).mean() < 0.7


def test_P12_framework_default_initializer(build):
    net = build(nn.Sequential(nn.Dense(64), nn.Dense(64)))
    net(inputs(2, 128))
    w = net[0].weight.numpy()
    assert np.isfinite(w).all() and w.std() > 0
    assert np.abs(w).max() < 1.0  # every framework's default scales with the fan
    other = build(nn.Sequential(nn.Dense(64), nn.Dense(64)))
    other(inputs(2, 128))
    assert not np.array_equal(other[0].weight.numpy(), w)  # unseeded defaults differ


def test_P13_initializers_given_at_construction(build):
    spec = nn.Sequential(
        nn.Dense(4, activation="relu", weight_init=init.Normal(std=0.01), bias_init=init.Zeros()),
        nn.Dense(1, weight_init=init.Ones(), bias_init=init.Ones()))
    net = build(spec)
    net(inputs(2, 4))
    values = [p.numpy() for p in up.params(net).values()]
    assert [v.shape for v in values] == [(4, 4), (4,), (1, 4), (1,)]
    assert np.abs(values[0]).max() < 0.1 and not values[1].any()
    assert (values[2] == 1).all() and (values[3] == 1).all()
    up.initialize(net, init.Constant(7), force_reinit=True)  # the layer's own init wins
    assert (net[1].weight.numpy() == 1).all()


def test_P14_custom_initializer_class_at_construction(build):
    class OnesInit(init.Initializer):
        def sample(self, target, rng):
            return np.ones(target.shape)

    net = build(nn.Sequential(nn.Dense(64, weight_init=OnesInit())))
    net(inputs(2, 3))
    np.testing.assert_array_equal(net[0].weight.numpy(), np.ones((64, 3), np.float32))


def test_L13_apply_visits_every_layer_including_containers(build):
    net = build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Sequential(nn.Dense(4)),
                              nn.Dense(1)))
    visited = []

    def xavier(layer):
        visited.append(layer.path)
        if layer.spec is not None and isinstance(layer.spec, nn.Dense):
            up.initialize(layer, init.XavierUniform(), force_reinit=True)

    net.apply(xavier)
    assert visited == ["0", "1.0", "1", "2", ""]  # children first, like torch's apply
    net(inputs(2, 6))
    bound = math.sqrt(6 / (6 + 8))
    assert np.abs(net[0].weight.numpy()).max() <= bound
    assert net[0].weight.shape == (8, 6)


def test_seeded_values_depend_only_on_seed_name_and_shape(build):
    net = build(lazy_mlp())
    up.initialize(net, init.Normal(std=0.01), seed=7)
    net(inputs(2, 20))
    expected = init.Normal(std=0.01).generate(init.Target("0.weight", (256, 20)), 7)
    np.testing.assert_array_equal(net[0].weight.numpy(), expected)
    other = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20), nn.Dense(10)))
    up.initialize(other, init.Normal(std=0.01), seed=7)  # eager here, lazy above: same values
    other(inputs(2, 20))
    for name, p in up.params(net).items():
        np.testing.assert_array_equal(up.params(other)[name].numpy(), p.numpy())


def test_select_by_pattern_fills_whatever_role(build):
    net = _net(build)
    up.initialize(net, init.Constant(3), select="*.bias", force_reinit=True)
    assert (net[0].bias.numpy() == 3).all() and (net[1].bias.numpy() == 3).all()
    up.initialize(net, init.Constant(2), select=lambda p: p.name == "1.weight", force_reinit=True)
    assert (net[1].weight.numpy() == 2).all() and not (net[0].weight.numpy() == 2).all()


def test_a_layers_own_initializer_applies_when_every_size_is_given(build):
    """A layer built with its memory (every size given) still gets its own initializer:
    the framework's values from construction are defaults, not a skipped registration."""
    net = build(nn.Sequential(nn.Dense(16, in_features=8, weight_init=init.Constant(0.5)),
                              nn.Dense(3, weight_init=init.Uniform(-0.07, 0.07))))
    up.initialize(net, seed=7)
    net(inputs(2, 8))
    assert (net[0].weight.numpy() == 0.5).all()
    w = net[1].weight.numpy()
    assert abs(w).max() <= 0.07 and w.std() > 0.02
