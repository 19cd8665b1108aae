"""Tied parameters: P11, explicit ties before/after materialization, transposed ties."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs, reference_mlp


def test_P11_shared_layer_is_one_storage(build):
    shared = nn.Dense(8, activation="relu")
    net = build(nn.Sequential(nn.Dense(8, activation="relu"), shared, shared, nn.Dense(1)))
    x = inputs(2, 4)
    net(x)
    np.testing.assert_array_equal(net[1].weight[0], net[2].weight[0])
    net[1].weight[0, 0] = 100
    assert net[2].weight[0, 0] == 100  # the same storage, not a copy
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight",
                                    "3.bias"]  # listed once
    assert net[2].weight.aliases == ("1.weight",)
    assert up.params(net)["1.weight"].aliases == ("2.weight",)


@pytest.mark.requires("gradients")
def test_P11_gradients_of_both_uses_add_up(build):
    shared = nn.Dense(8, activation="tanh")
    spec = nn.Sequential(nn.Dense(8, activation="tanh"), shared, shared, nn.Dense(1))
    net = build(spec)
    x = inputs(2, 4)
    up.initialize(net, init.Normal(std=0.5), seed=1)
    net(x)
    tied = up.gradients(net, x)
    untied_spec = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(8, activation="tanh"),
                                nn.Dense(8, activation="tanh"), nn.Dense(1))
    ref = build(untied_spec)
    ref(x)
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"):
        up.params(ref)[name].set(up.params(net)[name].numpy())
    up.params(ref)["2.weight"].set(net[1].weight.numpy())
    up.params(ref)["2.bias"].set(net[1].bias.numpy())
    g = up.gradients(ref, x)
    np.testing.assert_allclose(tied["1.weight"], g["1.weight"] + g["2.weight"], rtol=1e-4,
                               atol=1e-6)
    assert "2.weight" not in tied


def test_tie_layers_before_materialization_survives_it(build):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(8)))
    up.tie(net, net[1], net[2])
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert net[1].weight.shape == (8, None)
    net(inputs(2, 8))
    np.testing.assert_array_equal(net[1].weight.numpy(), net[2].weight.numpy())
    net[2].weight[1, 1] = -3
    assert net[1].weight[1, 1] == -3


def test_tie_after_materialization_keeps_first_values(build):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(8)))
    x = inputs(2, 8)
    net(x)
    first = net[1].weight.numpy()
    up.tie(net, "1.weight", "2.weight")
    np.testing.assert_array_equal(net[2].weight.numpy(), first)
    net[2].bias[0] = 7.0  # only weights tied: the biases stay two storages (a write, since
    assert net[1].bias[0] != 7.0 and net[2].bias.aliases == ()  # default biases may be 0)
    net[1].weight[0, 0] = 9
    values = {n: p.numpy() for n, p in up.params(net).items()}
    h = x @ values["0.weight"].T + values["0.bias"]
    h = h @ values["1.weight"].T + values["1.bias"]
    h = h @ values["1.weight"].T + values["2.bias"]
    np.testing.assert_allclose(net.to_numpy(net(x)), h, rtol=1e-5, atol=1e-5)


@pytest.mark.requires("transpose_tie")
@pytest.mark.requires("gradients")
def test_transposed_tie_autoencoder(build):
    net = build(nn.Sequential(nn.Dense(3, activation="tanh", in_features=6), nn.Dense(6)))
    up.tie(net, "0.weight", "1.weight", transpose=True)
    x = inputs(2, 6)
    net(x)
    np.testing.assert_array_equal(net[1].weight.numpy(), net[0].weight.numpy().T)
    net[1].weight[5, 2] = 0.25
    assert net[0].weight[2, 5] == 0.25
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.bias"]
    tied = up.gradients(net, x)
    ref = build(nn.Sequential(nn.Dense(3, activation="tanh", in_features=6), nn.Dense(6)))
    ref(x)
    for name in ("0.weight", "0.bias", "1.bias"):
        up.params(ref)[name].set(up.params(net)[name].numpy())
    up.params(ref)["1.weight"].set(net[1].weight.numpy())
    g = up.gradients(ref, x)
    np.testing.assert_allclose(tied["0.weight"], g["0.weight"] + g["1.weight"].T, rtol=1e-4,
                               atol=1e-6)


def test_tied_embedding_and_output_projection_need_no_transpose(build):
    net = build(nn.Sequential(nn.Embedding(10, 4), nn.Dense(10)))
    up.tie(net, "0.weight", "1.weight")
    tokens = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    out = net.to_numpy(net(tokens))
    assert out.shape == (2, 3, 10)
    e = net[0].weight.numpy()
    np.testing.assert_array_equal(net[1].weight.numpy(), e)
    np.testing.assert_allclose(out, e[tokens] @ e.T + net[1].bias.numpy(), rtol=1e-5, atol=1e-5)
    assert list(up.params(net)) == ["0.weight", "1.bias"]


@pytest.mark.requires("abstract")
def test_tie_survives_abstract_then_real_materialization(build):
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8), nn.Dense(8)))
    up.tie(net, net[1], net[2])
    up.materialize(net, input_shape=(1, 8), abstract=True)
    up.materialize(net)
    net[1].weight[0, 0] = 5
    assert net[2].weight[0, 0] == 5
    np.testing.assert_array_equal(net[1].weight.numpy(), net[2].weight.numpy())


def test_tie_incompatible_shapes_is_an_error_and_changes_nothing(build):
    net = build(nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(3), nn.Dense(3)))
    with pytest.raises(up.TieError, match=r"'0\.weight'.*\(8, 4\).*'1\.weight'.*\(3, None\)"):
        up.tie(net, "0.weight", "1.weight")  # one known, one still unknown: rows differ
    net(inputs(2, 4))
    with pytest.raises(up.TieError, match=r"\(8, 4\).*\(3, 8\)"):
        up.tie(net, net[0], net[1])
    assert len(up.params(net)) == 6 and net[1].weight.aliases == ()


def test_P11_shared_container_is_one_set_of_storages(build):
    inner = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(6))
    net = build(nn.Sequential(nn.Dense(6), inner, inner))
    x = inputs(3, 4)
    y = up.to_numpy(net(x))
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.0.weight", "1.0.bias",
                                    "1.1.weight", "1.1.bias"]
    p = {n: q.numpy() for n, q in up.params(net).items()}
    inner_use = [("1.0", "tanh"), ("1.1", None)]  # both uses compute with the same parameters
    want = reference_mlp(p, [("0", None), *inner_use, *inner_use], x)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    net[2][1].bias[0] = 7.0
    assert net[1][1].bias[0] == 7.0  # the same storage under both uses
