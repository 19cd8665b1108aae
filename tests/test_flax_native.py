"""Flax adapter beyond the shared suite: adopting linen modules, the native escape hatch,
ties under jax.grad, abstract materialization, training-mode batch statistics."""

import numpy as np
import pytest

flax = pytest.importorskip("flax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen  # noqa: E402

import unifparam as up  # noqa: E402
from unifparam import init, nn  # noqa: E402

X = np.random.default_rng(0).random((3, 4), dtype=np.float32)


class Block(linen.Module):
    """A setup-style module with nested and shared submodules."""

    def setup(self):
        self.encoder = linen.Sequential([linen.Dense(6), linen.relu])
        self.shared = linen.Dense(6)
        self.head = linen.Dense(2)

    def __call__(self, x):
        return self.head(self.shared(jnp.tanh(self.shared(self.encoder(x)))))


class Compact(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Dense(5)(x)
        x = linen.BatchNorm(use_running_average=True)(x)
        return linen.Dense(2)(jax.nn.relu(x))


def _leaves(net):
    return net._st.native.leaves


def test_adopt_sequential_without_variables_lists_deferred_params():
    net = up.build(linen.Sequential([linen.Dense(8), linen.relu, linen.Dense(1)]))
    assert net.backend == "flax"
    assert [(n, p.shape, p.state, p.native_name) for n, p in up.params(net).items()] == [
        ("0.weight", (8, None), "deferred", "params/layers_0/kernel"),
        ("0.bias", (8,), "deferred", "params/layers_0/bias"),
        ("2.weight", (1, None), "deferred", "params/layers_2/kernel"),
        ("2.bias", (1,), "deferred", "params/layers_2/bias")]
    up.initialize(net, init.Normal(std=0.01), seed=3)
    y = net.to_numpy(net(X))
    assert [p.shape for p in up.params(net).values()] == [(8, 4), (8,), (1, 8), (1,)]
    expected = init.Normal(std=0.01).generate(init.Target("0.weight", (8, 4)), 3)
    np.testing.assert_array_equal(net["0"].weight.numpy(), expected)
    module, variables = net.native
    np.testing.assert_allclose(np.asarray(module.apply(variables, X)), y, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(variables["params"]["layers_0"]["kernel"]), expected.T)


def test_adopt_with_variables_keeps_values_in_canonical_layout():
    module = linen.Sequential([linen.Dense(8), linen.relu, linen.Dense(1)])
    variables = module.init(jax.random.key(0), X)
    net = up.build((module, variables))
    kernel = np.asarray(variables["params"]["layers_0"]["kernel"])
    np.testing.assert_array_equal(net["0"].weight.numpy(), kernel.T)
    np.testing.assert_allclose(net.to_numpy(net(X)), np.asarray(module.apply(variables, X)),
                               rtol=1e-6)
    assert all(p.state == "materialized" for p in up.params(net).values())


def test_nested_module_with_shared_instance_is_one_storage():
    module = Block()
    variables = module.init(jax.random.key(1), X)
    net = up.build((module, variables))
    names = list(up.params(net))
    assert names == ["encoder.0.weight", "encoder.0.bias", "shared.weight", "shared.bias",
                     "head.weight", "head.bias"]
    assert up.params(net)["shared.weight"].shape == (6, 6)
    grads = up.gradients(net, X)
    native = jax.grad(lambda v: module.apply(v, X).sum())(variables)
    np.testing.assert_allclose(grads["shared.weight"],
                               np.asarray(native["params"]["shared"]["kernel"]).T, rtol=1e-5)


def test_shared_instance_in_a_sequential_is_listed_once_with_an_alias():
    shared = linen.Dense(4)
    module = linen.Sequential([linen.Dense(4), shared, shared, linen.Dense(1)])
    net = up.build((module, module.init(jax.random.key(2), X)))
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight",
                                    "3.bias"]
    assert net["2"].weight.aliases == ("1.weight",)
    net["1"].weight[0, 0] = 7.0
    assert net["2"].weight[0, 0] == 7.0


def test_compact_module_names_and_non_trainable_batch_stats():
    module = Compact()
    net = up.build((module, module.init(jax.random.key(3), X)))
    listed = {n: (p.shape, p.trainable, p.role) for n, p in up.params(net).items()}
    assert listed["Dense_0.weight"] == ((5, 4), True, "weight")
    assert listed["BatchNorm_0.running_var"] == ((5,), False, "running_var")
    assert listed["BatchNorm_0.bias"] == ((5,), True, "shift")
    with pytest.raises(up.UnsupportedError, match="compact"):
        up.build(Compact())


def test_initialize_tie_materialize_on_an_adopted_module():
    module = linen.Sequential([linen.Dense(3), linen.tanh, linen.Dense(4)])
    net = up.build(module)
    up.tie(net, "0.weight", "2.weight", transpose=True)
    up.initialize(net, init.Normal(std=0.5), seed=0)
    up.materialize(net, X)
    assert list(up.params(net)) == ["0.weight", "0.bias", "2.bias"]
    np.testing.assert_array_equal(net["2"].weight.numpy(), net["0"].weight.numpy().T)
    w = net["0"].weight           # a view obtained before the write sees the new value
    net["2"].weight[1, 2] = 0.25
    assert w[2, 1] == 0.25
    assert ("params", "layers_2", "kernel") not in _leaves(net)  # only the root is stored


def test_transposed_tie_gradients_add_up_through_jax_grad():
    spec = nn.Sequential(nn.Dense(3, activation="tanh", in_features=4), nn.Dense(4))
    net = up.build(spec, backend="flax")
    up.tie(net, "0.weight", "1.weight", transpose=True)
    up.initialize(net, init.Normal(std=0.5), seed=1)
    tied = up.gradients(net, X)["0.weight"]
    w, b0, b1 = (net[0].weight.numpy(), net[0].bias.numpy(), net[1].bias.numpy())

    def f(w0, w1):
        return (jnp.tanh(X @ w0.T + b0) @ w1.T + b1).sum()

    g0, g1 = jax.grad(f, argnums=(0, 1))(w, w.T)
    np.testing.assert_allclose(tied, np.asarray(g0) + np.asarray(g1).T, rtol=1e-5, atol=1e-6)
    module, variables = net.native   # roots only; the module expands the tie itself
    assert "kernel" not in variables["params"]["layers_1"]
    np.testing.assert_allclose(np.asarray(module.apply(variables, X)), net.to_numpy(net(X)),
                               rtol=1e-6)
    native = jax.grad(lambda v: module.apply(v, X).sum())(variables)
    np.testing.assert_allclose(np.asarray(native["params"]["layers_0"]["kernel"]).T, tied,
                               rtol=1e-5, atol=1e-6)


def test_spec_shared_layer_native_apply_matches():
    shared = nn.Dense(4, activation="relu")
    net = up.build(nn.Sequential(nn.Dense(4), shared, shared, nn.Dense(2)), backend="flax")
    y = net.to_numpy(net(X))
    module, variables = net.native
    assert sorted(variables["params"]) == ["layers_0", "layers_1", "layers_3"]
    np.testing.assert_allclose(np.asarray(module.apply(variables, X)), y, rtol=1e-6)
    sub_module, sub_vars = net[1].native
    assert sub_vars["params"]["kernel"].shape == (4, 4)


def test_abstract_materialization_allocates_nothing():
    spec = nn.Sequential(*(nn.Dense(1024) for _ in range(8)), nn.BatchNorm())
    net = up.build(spec, backend="flax")
    up.materialize(net, input_shape=(1, 1024), abstract=True)
    leaves = _leaves(net)
    assert leaves and all(isinstance(v, jax.ShapeDtypeStruct) for v in leaves.values())
    assert all(p.state == "abstract" for p in up.params(net).values())
    assert net[0].weight.shape == (1024, 1024)
    with pytest.raises(up.DeferredParameterError, match="no memory"):
        net[0].weight.numpy()
    up.initialize(net, init.Constant(0.001), seed=0)
    up.materialize(net)
    assert all(isinstance(v, jax.Array) for v in _leaves(net).values())
    assert (net[7].weight.numpy() == 0.001).all() and (net[8].running_var.numpy() == 1).all()


def test_abstract_variables_of_an_adopted_module():
    module = Compact()
    shapes = jax.eval_shape(module.init, jax.random.key(0), X)
    net = up.build((module, shapes))
    assert all(p.state == "abstract" for p in up.params(net).values())
    up.materialize(net, X)
    assert net["Dense_0"].weight.numpy().shape == (5, 4)


def test_training_updates_batch_stats_with_torch_momentum():
    net = up.build(nn.Sequential(nn.BatchNorm(), nn.Dropout(0.5)), backend="flax")
    net(X)
    np.testing.assert_array_equal(net[0].running_mean.numpy(), np.zeros(4, np.float32))
    net(X, training=True)
    np.testing.assert_allclose(net[0].running_mean.numpy(), 0.1 * X.mean(axis=0), rtol=1e-5)
    y = net.to_numpy(net(X))  # inference: running statistics, no dropout
    m, v = net[0].running_mean.numpy(), net[0].running_var.numpy()
    np.testing.assert_allclose(y, (X - m) / np.sqrt(v + 1e-5), rtol=1e-5, atol=1e-6)


def test_conv_layout_and_channels_first_flatten():
    net = up.build(nn.Sequential(nn.Conv2D(3, 2, padding=1), nn.Flatten()), backend="flax")
    x = np.random.default_rng(1).random((2, 2, 4, 4), dtype=np.float32)
    y = net.to_numpy(net(x))
    w, b = net[0].weight.numpy(), net[0].bias.numpy()
    assert w.shape == (3, 2, 2, 2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 3, 5, 5), np.float32)
    for i in range(5):
        for j in range(5):
            ref[:, :, i, j] = np.einsum("ncij,ocij->no", xp[:, :, i:i + 2, j:j + 2], w) + b
    np.testing.assert_allclose(y, ref.reshape(2, -1), rtol=1e-5, atol=1e-5)
