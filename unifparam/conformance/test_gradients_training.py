"""``gradients(training=...)``: the forward pass in the framework's training mode (batch
statistics used, running statistics updated), or in inference mode (the default)."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs


def _net(build):
    net = build(nn.Sequential(nn.Dense(3), nn.BatchNorm(momentum=0.1)))
    up.initialize(net, init.Normal(std=0.5), seed=0)
    return net


def test_training_gradients_use_batch_statistics(build):
    # sum(BatchNorm(h)) over the batch is sum(gamma * xhat + beta): xhat sums to 0 for every
    # feature with batch statistics, so nothing before the norm gets a gradient; with the
    # running statistics (inference) it does
    net = _net(build)
    x = inputs(6, 4) * 3.0
    train = up.gradients(net, x, training=True)
    np.testing.assert_allclose(train["0.weight"], 0.0, atol=1e-4)
    np.testing.assert_allclose(train["1.bias"], 6.0, rtol=1e-5)
    assert np.abs(up.gradients(net, x)["0.weight"]).max() > 1e-2


def test_training_gradients_update_running_statistics_as_a_training_call(build):
    x = inputs(6, 4) * 3.0
    stepped, called = _net(build), _net(build)
    up.gradients(stepped, x, training=True)
    called(x, training=True)
    for name in ("1.running_mean", "1.running_var"):
        np.testing.assert_allclose(up.params(stepped)[name].numpy(),
                                   up.params(called)[name].numpy(), rtol=1e-5, atol=1e-6)
    before = up.params(stepped)["1.running_mean"].numpy().copy()
    up.gradients(stepped, x)  # inference: the statistics stay
    np.testing.assert_array_equal(up.params(stepped)["1.running_mean"].numpy(), before)


def test_training_must_be_a_bool(build):
    net = _net(build)
    with pytest.raises(up.ArgumentError, match="training"):
        up.gradients(net, inputs(2, 4), training="yes")
