"""Parameter management: P1-P6, P10 (reading, listing, naming, writing)."""

import numpy as np
import pytest

import unifparam as up

from ._helpers import inputs, mlp, reference_mlp, rgnet


def test_P1_small_mlp_output_shape_and_values(build):
    net = build(mlp())
    x = inputs(2, 4)
    y = net.to_numpy(net(x))
    assert y.shape == (2, 1)
    values = {n: p.numpy() for n, p in up.params(net).items()}
    np.testing.assert_allclose(y, reference_mlp(values, [("0", "relu"), ("1", None)], x),
                               rtol=1e-5, atol=1e-6)


def test_P2_one_layer_params_by_index(build):
    net = build(mlp())
    net(inputs(2, 4))
    layer = up.params(net[1])
    assert list(layer) == ["weight", "bias"]
    assert [(p.name, p.shape, p.dtype) for p in layer.values()] == [
        ("1.weight", (1, 8), "float32"), ("1.bias", (1,), "float32")]
    assert net[1].weight.name == "1.weight"


@pytest.mark.requires("gradients")
def test_P3_parameter_is_an_object(build):
    net = build(mlp())
    x = inputs(2, 4)
    net(x)
    bias = net[1].bias
    assert (bias.name, bias.shape, bias.dtype, bias.state) == ("1.bias", (1,), "float32",
                                                                "materialized")
    assert bias.numpy().shape == (1,)
    assert bias.grad is None  # nothing before any backward pass
    assert bias.native is not None
    up.gradients(net, x)
    assert bias.grad.shape == (1,)
    np.testing.assert_allclose(bias.grad, [2.0], rtol=1e-6)  # d(sum y)/db over a batch of 2


def test_P4_all_parameters_at_once(build):
    net = build(mlp())
    net(inputs(2, 4))
    assert [(k, p.shape) for k, p in up.params(net[0]).items()] == [("weight", (8, 4)),
                                                                     ("bias", (8,))]
    assert [(k, p.shape) for k, p in up.params(net).items()] == [
        ("0.weight", (8, 4)), ("0.bias", (8,)), ("1.weight", (1, 8)), ("1.bias", (1,))]
    arrays = [p.numpy() for p in up.params(net).values()]  # Keras get_weights()
    assert [a.shape for a in arrays] == [(8, 4), (8,), (1, 8), (1,)]


def test_P5_access_by_name(build):
    net = build(mlp())
    net(inputs(2, 4))
    np.testing.assert_array_equal(up.params(net)["1.bias"].numpy(), net[1].bias.numpy())
    assert up.params(net)["1.bias"].name == "1.bias"


def test_P6_nested_blocks(build):
    net = build(rgnet())
    net(inputs(2, 4))
    text = repr(net)
    assert text.splitlines()[0] == "Sequential("
    assert "(0): Dense(4 -> 32, relu)" in text and "(1): Dense(16 -> 10)" in text
    names = list(up.params(net))
    assert len(names) == 18
    assert names[:4] == ["0.0.0.weight", "0.0.0.bias", "0.0.1.weight", "0.0.1.bias"]
    assert names[-2:] == ["1.weight", "1.bias"]
    bias = net[0][1][0].bias
    assert (bias.name, bias.shape) == ("0.1.0.bias", (32,))
    np.testing.assert_array_equal(bias.numpy(), up.params(net)["0.1.0.bias"].numpy())


def test_P10_setting_values_directly(build):
    net = build(mlp())
    x = inputs(2, 4)
    net(x)
    w = net[0].weight
    before = w.numpy()
    w[:] += 1
    w[0, 0] = 42
    after = net[0].weight.numpy()
    expected = before + 1
    expected[0, 0] = 42
    np.testing.assert_array_equal(after, expected)
    p = up.params(net)["1.bias"]
    p += 0.5
    values = {n: q.numpy() for n, q in up.params(net).items()}
    np.testing.assert_allclose(net.to_numpy(net(x)),
                               reference_mlp(values, [("0", "relu"), ("1", None)], x),
                               rtol=1e-5, atol=1e-5)  # the model computes with the new values


def test_summary_text_shows_unknown_dims_and_counts(build):
    net = build(mlp())
    text = up.summary(net)
    assert "(8, None)" in text and "deferred" in text and "with unknown shapes" in text
    net(inputs(2, 4))
    text = up.summary(net)
    assert "Total params: 49" in text and "Dense(4 -> 8, relu)" in text


@pytest.mark.requires("gradients")
def test_P3_gradients_are_canonical_and_correct(build):
    net = build(mlp())
    x = inputs(2, 4)
    net(x)
    v = {n: p.numpy() for n, p in up.params(net).items()}
    pre = x @ v["0.weight"].T + v["0.bias"]
    h = np.maximum(pre, 0)
    dy = np.ones((2, 1), np.float32)  # d(sum y)/dy
    dpre = (dy @ v["1.weight"]) * (pre > 0)
    expected = {"1.weight": dy.T @ h, "1.bias": dy.sum(0), "0.weight": dpre.T @ x,
                "0.bias": dpre.sum(0)}
    grads = up.gradients(net, x)
    assert set(grads) == set(expected)
    for name, ref in expected.items():
        assert grads[name].shape == up.params(net)[name].shape  # canonical layout
        np.testing.assert_allclose(grads[name], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(up.params(net)[name].grad, ref, rtol=1e-5, atol=1e-6)
