"""The storage-driver contract: shapes the core establishes, adoption of the backend's own
model, framework defaults (reset), batch-norm statistics and the seeded default path."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs, mlp


def test_partial_shapes_unified_across_a_tie_are_kept(build):
    # 1.weight knows (8, 8) from in_features; 0.weight only (8, None): once tied, the core
    # knows (8, 8) for both, whatever partial shape the storage reports for 0.weight.
    net = build(nn.Sequential(nn.Dense(8), nn.Dense(8, in_features=8)))
    assert net[0].weight.shape == (8, None)
    up.tie(net, "1.weight", "0.weight")
    assert net[0].weight.shape == (8, 8)
    assert net[1].weight.shape == (8, 8) and net[0].weight.aliases == ("1.weight",)
    with pytest.raises(up.InputShapeError, match="tied to '1.weight'"):
        net(inputs(2, 5))  # the tie fixes the input size at 8
    assert net[0].weight.shape == (8, 8) and net[0].bias.state == "deferred"
    y = net.to_numpy(net(inputs(2, 8)))
    assert y.shape == (2, 8)
    np.testing.assert_array_equal(net[0].weight.numpy(), net[1].weight.numpy())


def test_adopting_the_backends_own_model_keeps_names_shapes_and_values(build):
    net = build(mlp())
    x = inputs(2, 4)
    up.initialize(net, init.Normal(std=0.5), seed=1)
    y = net.to_numpy(net(x))
    adopted = up.build(net.native)
    assert adopted.backend == net.backend
    assert {n: p.shape for n, p in up.params(adopted).items()} == {
        n: p.shape for n, p in up.params(net).items()}
    for name, p in up.params(net).items():
        np.testing.assert_array_equal(up.params(adopted)[name].numpy(), p.numpy())
    np.testing.assert_allclose(adopted.to_numpy(adopted(x)), y, rtol=1e-6, atol=1e-6)
    up.initialize(adopted, init.Normal(std=0.5), seed=1, force_reinit=True)
    for name, p in up.params(net).items():  # seeded values depend on (seed, name, shape) only
        np.testing.assert_array_equal(up.params(adopted)[name].numpy(), p.numpy())


def test_reset_refills_only_the_selected_parameters_with_framework_defaults(build):
    net = build(mlp())
    x = inputs(2, 4)
    up.initialize(net, init.Constant(3.0))
    net(x)
    up.initialize(net, select=net[0], force_reinit=True)  # no initializer: the framework's
    w = net[0].weight.numpy()
    assert np.isfinite(w).all() and not np.all(w == 3.0)
    assert np.abs(w).max() < 3.0
    np.testing.assert_array_equal(net[1].weight.numpy(), np.full((1, 8), 3.0, np.float32))
    np.testing.assert_array_equal(net[1].bias.numpy(), np.zeros((1,), np.float32))


def test_batchnorm_training_updates_running_statistics_like_pytorch(build):
    # one convention on every backend: new = (1 - m) * old + m * batch, variance unbiased
    net = build(nn.Sequential(nn.BatchNorm(momentum=0.1)))
    x = inputs(6, 3) * 4.0
    net(x)
    net(x, training=True)
    m = 0.1
    np.testing.assert_allclose(net[0].running_mean.numpy(), m * x.mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    expected = (1 - m) * 1.0 + m * x.var(axis=0, ddof=1)
    np.testing.assert_allclose(net[0].running_var.numpy(), expected, rtol=1e-5, atol=1e-6)


def _conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def test_seeded_default_initializer_on_a_convolution_runs_what_params_report(build):
    net = build(nn.Sequential(nn.Conv2D(8, 3, padding=1)))
    up.initialize(net, seed=1234)  # no initializer: the portable default, seeded
    x = inputs(2, 3, 8, 8)
    y = net.to_numpy(net(x))
    w, b = net[0].weight.numpy(), net[0].bias.numpy()
    bound = 1 / np.sqrt(3 * 3 * 3)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    np.testing.assert_allclose(y, _conv_reference(x, w, b, 1), rtol=1e-4, atol=1e-5)


def test_abstract_then_real_materialization_of_a_flattening_model(build):
    if "abstract" not in up.get_backend(build.keywords["backend"]).capabilities:
        pytest.xfail("backend cannot materialize abstractly")
    net = build(nn.Sequential(nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(5)))
    x = inputs(2, 3, 8, 8)
    up.materialize(net, x, abstract=True)
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    up.materialize(net)
    assert net[2].weight.shape == (5, 144)
    assert net.to_numpy(net(x)).shape == (2, 5)
