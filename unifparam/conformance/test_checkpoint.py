"""Checkpoints on the backend under test: round trip, ties, deferred models, partial loads.

Files are written and read through the backend's primitives only; what crosses backends is
checked by the repository's ``tests/test_checkpoint_crossbackend.py``.
"""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs


def _values(net):
    return {n: p.numpy() for n, p in up.params(net).items()}


def _assert_same_values(a, b):
    va, vb = _values(a), _values(b)
    assert list(va) == list(vb)
    for name in va:
        np.testing.assert_array_equal(va[name], vb[name], err_msg=name)


def norms():
    return nn.Sequential(nn.Dense(16), nn.BatchNorm(), nn.Activation("relu"), nn.Dense(8),
                         nn.LayerNorm(), nn.Dense(4, activation="sigmoid"))


def convnet():
    return nn.Sequential(nn.Conv2D(4, 3, padding=1, activation="relu"),
                         nn.Conv2D(6, 3, stride=2), nn.Flatten(), nn.Dense(5))


def _trained(build, spec, x, seed=0):
    net = build(spec)
    up.initialize(net, init.Normal(std=0.5), seed=seed)
    net(x, training=True)  # moves batch-norm running statistics away from their defaults
    return net


def test_round_trip_restores_every_value_and_output(build, tmp_path):
    spec, x = norms(), inputs(3, 6)
    net = _trained(build, spec, x)
    path = tmp_path / "norms.safetensors"
    up.save(net, path)
    other = build(spec)
    other(x)  # materialized with other values
    report = up.load(other, path)
    assert report.missing == () and report.unexpected == ()
    _assert_same_values(net, other)
    assert up.params(other)["1.running_mean"].numpy().any()  # non-trainable state came too
    np.testing.assert_allclose(other.to_numpy(other(x)), net.to_numpy(net(x)), rtol=1e-5,
                               atol=1e-6)


def test_load_into_deferred_model_materializes_from_the_file(build, tmp_path):
    x = inputs(2, 3, 8, 8)
    net = _trained(build, convnet(), x, seed=3)
    up.save(net, tmp_path / "conv.safetensors")
    fresh = build(convnet())
    assert fresh[0].weight.state == "deferred"
    up.load(fresh, tmp_path / "conv.safetensors")  # no example input anywhere
    assert [p.state for p in up.params(fresh).values()] == ["materialized"] * 6
    assert fresh[3].weight.shape == (5, 54)
    _assert_same_values(net, fresh)
    np.testing.assert_allclose(fresh.to_numpy(fresh(x)), net.to_numpy(net(x)), rtol=1e-5,
                               atol=1e-5)
    assert str(up.summary(fresh)) == str(up.summary(net))


def test_ties_survive_the_round_trip(build, tmp_path):
    shared = nn.Dense(8, activation="tanh")
    spec = nn.Sequential(nn.Dense(8, activation="tanh"), shared, shared, nn.Dense(8),
                         nn.Dense(8))
    net = build(spec)
    up.tie(net, net[3], net[4])
    x = inputs(2, 8)
    up.initialize(net, init.Normal(std=0.5), seed=5)
    y = net.to_numpy(net(x))
    up.save(net, tmp_path / "tied.safetensors")
    fresh = build(spec)  # the explicit tie is not in the spec: the file restores it
    report = up.load(fresh, tmp_path / "tied.safetensors")
    assert set(report.tied) == {"4.weight", "4.bias"}
    assert list(up.params(fresh)) == list(up.params(net))
    assert fresh[4].weight.aliases == ("3.weight",) and fresh[2].bias.aliases == ("1.bias",)
    np.testing.assert_allclose(fresh.to_numpy(fresh(x)), y, rtol=1e-5, atol=1e-6)
    fresh[4].weight[0, 0] = 7
    assert fresh[3].weight[0, 0] == 7  # one storage again, not two equal copies
    assert str(up.summary(fresh)) == str(up.summary(net))


@pytest.mark.requires("transpose_tie")
def test_transposed_tie_survives_the_round_trip(build, tmp_path):
    spec = nn.Sequential(nn.Dense(3, activation="tanh"), nn.Dense(6))
    net = build(spec)
    up.tie(net, "0.weight", "1.weight", transpose=True)
    x = inputs(2, 6)
    y = net.to_numpy(net(x))
    up.save(net, tmp_path / "ae.safetensors")
    fresh = build(spec)
    up.load(fresh, tmp_path / "ae.safetensors")
    assert list(up.params(fresh)) == ["0.weight", "0.bias", "1.bias"]
    np.testing.assert_array_equal(fresh[1].weight.numpy(), fresh[0].weight.numpy().T)
    np.testing.assert_allclose(fresh.to_numpy(fresh(x)), y, rtol=1e-5, atol=1e-6)
    fresh[1].weight[5, 2] = 0.5
    assert fresh[0].weight[2, 5] == 0.5


def test_load_into_model_that_already_has_the_ties(build, tmp_path):
    spec = nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(8))
    net = build(spec)
    up.tie(net, "1.weight", "2.weight")
    net(inputs(2, 8))
    up.save(net, tmp_path / "t.safetensors")
    fresh = build(spec)
    up.tie(fresh, "1.weight", "2.weight")
    assert up.load(fresh, tmp_path / "t.safetensors").tied == ()
    _assert_same_values(net, fresh)


@pytest.mark.requires("abstract")
def test_load_into_abstract_model_allocates(build, tmp_path):
    net = _trained(build, norms(), inputs(3, 6))
    up.save(net, tmp_path / "n.safetensors")
    fresh = build(norms())
    up.materialize(fresh, input_shape=(1, 6), abstract=True)
    up.load(fresh, tmp_path / "n.safetensors")
    _assert_same_values(net, fresh)


def test_strict_false_loads_what_matches_and_reports_the_rest(build, tmp_path):
    small = build(nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(2)))
    small(inputs(2, 4))
    up.save(small, tmp_path / "small.safetensors")
    big = build(nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(2), nn.Dense(3)))
    big(inputs(2, 4))
    before = big[2].weight.numpy()
    with pytest.raises(up.CheckpointMismatchError, match=r"Missing.*'2\.weight'.*strict=False"):
        up.load(big, tmp_path / "small.safetensors")
    report = up.load(big, tmp_path / "small.safetensors", strict=False)
    assert report.missing == ("2.weight", "2.bias") and report.unexpected == ()
    np.testing.assert_array_equal(big[0].weight.numpy(), small[0].weight.numpy())
    np.testing.assert_array_equal(big[2].weight.numpy(), before)
    up.save(big, tmp_path / "big.safetensors")
    report = up.load(small, tmp_path / "big.safetensors", strict=False)
    assert report.unexpected == ("2.weight", "2.bias") and report.missing == ()


def test_shape_mismatch_names_parameter_and_shapes_and_changes_nothing(build, tmp_path):
    a = build(nn.Sequential(nn.Dense(8), nn.Dense(3)))
    a(inputs(2, 4))
    up.save(a, tmp_path / "a.safetensors")
    b = build(nn.Sequential(nn.Dense(8), nn.Dense(5)))
    b(inputs(2, 4))
    before = _values(b)
    for strict in (True, False):
        with pytest.raises(up.CheckpointMismatchError, match=r"'1\.weight'.*\(5, 8\).*\(3, 8\)"):
            up.load(b, tmp_path / "a.safetensors", strict=strict)
    after = _values(b)
    for name in before:  # layer 0 matched but must not have been written
        np.testing.assert_array_equal(after[name], before[name])


def test_failed_load_into_deferred_model_leaves_it_deferred_and_untied(build, tmp_path):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(3)))
    up.tie(net, net[0], net[1])
    net(inputs(2, 8))
    up.save(net, tmp_path / "a.safetensors")
    fresh = build(nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(4)))  # last layer differs
    with pytest.raises(up.CheckpointMismatchError, match=r"'2\.weight'"):
        up.load(fresh, tmp_path / "a.safetensors")
    assert [p.state for p in up.params(fresh).values()] == ["deferred"] * 6
    assert fresh[1].weight.aliases == ()  # the file's tie was not half-applied


def test_tie_conflict_is_an_error(build, tmp_path):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8)))
    net(inputs(2, 8))
    up.save(net, tmp_path / "untied.safetensors")
    tied = build(nn.Sequential(nn.Dense(8), nn.Dense(8)))
    up.tie(tied, "0.weight", "1.weight")
    with pytest.raises(up.CheckpointMismatchError, match=r"ties.*separately"):
        up.load(tied, tmp_path / "untied.safetensors")


def test_saving_a_deferred_model_is_an_error(build, tmp_path):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(1)))
    with pytest.raises(up.DeferredParameterError, match=r"'0\.weight'.*materialize"):
        up.save(net, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
