"""Flax NNX adapter beyond the shared suite: adopting nnx.Module models written the way the
Flax docs write them, the live module as ``net.native``, gradients against ``nnx.grad``,
checkpoints shared with PyTorch."""

from functools import partial

import numpy as np
import pytest

pytest.importorskip("flax.nnx")
import jax  # noqa: E402
from flax import nnx  # noqa: E402

import unifparam as up  # noqa: E402
from unifparam import init, nn  # noqa: E402

X = np.random.default_rng(0).random((5, 4), dtype=np.float32)
IMAGES = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)  # NHWC, as nnx


class MLP(nnx.Module):
    """The Flax docs' MLP: Linear, BatchNorm, Dropout, Linear."""

    def __init__(self, din: int, dmid: int, dout: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.bn = nnx.BatchNorm(dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.linear2 = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.dropout(self.bn(self.linear1(x))))
        return self.linear2(x)


class CNN(nnx.Module):
    """The Flax docs' MNIST CNN, smaller: Conv, pool, Conv, pool, Linear, Linear."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(4, 8, kernel_size=(3, 3), rngs=rngs)
        self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(32, 16, rngs=rngs)
        self.linear2 = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        x = self.avg_pool(nnx.relu(self.conv1(x)))
        x = self.avg_pool(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)
        return self.linear2(nnx.relu(self.linear1(x)))


class Shared(nnx.Module):
    """One submodule reached through two attributes, applied twice."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.encoder = nnx.Linear(4, 6, rngs=rngs)
        self.shared = nnx.Linear(6, 6, rngs=rngs)
        self.again = self.shared
        self.head = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.again(nnx.tanh(self.shared(self.encoder(x)))))


def _eval_grads(model, x):
    model.eval()
    grads = nnx.grad(lambda m: m(x).sum())(model)
    model.train()
    return grads


def test_native_nnx_model_is_detected_as_flax_nnx_and_is_live():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    net = up.build(model)
    assert net.backend == "flax:nnx"
    assert net.native is model and net["linear1"].native is model.linear1
    assert net["linear1"].weight.native is model.linear1.kernel


def test_detection_and_configurations_name_the_variant():
    from unifparam import _registry
    from unifparam._cli import configurations
    assert _registry.detect(MLP(4, 8, 3, rngs=nnx.Rngs(0))) == "flax:nnx"
    assert _registry.detect(nnx.Linear(2, 2, rngs=nnx.Rngs(0))) == "flax:nnx"
    assert "flax:nnx" in configurations("all")
    assert up.get_backend("flax:nnx").name == "flax:nnx"


def test_mlp_params_in_definition_order_canonical_names_and_layout():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    net = up.build(model)
    listed = [(n, p.shape, p.trainable, p.role, p.native_name)
              for n, p in up.params(net).items()]
    assert listed == [
        ("linear1.weight", (8, 4), True, "weight", "linear1.kernel"),
        ("linear1.bias", (8,), True, "bias", "linear1.bias"),
        ("bn.running_mean", (8,), False, "running_mean", "bn.mean"),
        ("bn.running_var", (8,), False, "running_var", "bn.var"),
        ("bn.weight", (8,), True, "scale", "bn.scale"),
        ("bn.bias", (8,), True, "shift", "bn.bias"),
        ("linear2.weight", (3, 8), True, "weight", "linear2.kernel"),
        ("linear2.bias", (3,), True, "bias", "linear2.bias")]
    np.testing.assert_array_equal(net["linear1"].weight.numpy(),
                                  np.asarray(model.linear1.kernel[...]).T)
    assert [layer.path for layer in net] == ["linear1", "bn", "dropout", "linear2"]


def test_eval_and_training_modes_match_the_module_and_are_restored():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    net = up.build(model)
    model.eval()
    expected = np.asarray(model(X))
    model.train()
    np.testing.assert_allclose(net.to_numpy(net(X)), expected, rtol=1e-6)
    before = net["bn"].running_mean.numpy()
    net(X, training=True)  # batch statistics move, dropout is active
    assert not np.array_equal(net["bn"].running_mean.numpy(), before)
    assert model.dropout.deterministic is False and model.bn.use_running_average is False


def test_seeded_initialize_writes_the_live_module():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    net = up.build(model)
    up.initialize(net, init.Normal(std=0.01), seed=3, force_reinit=True)
    expected = init.Normal(std=0.01).generate(init.Target("linear2.weight", (3, 8)), 3)
    np.testing.assert_array_equal(net["linear2"].weight.numpy(), expected)
    np.testing.assert_array_equal(np.asarray(model.linear2.kernel[...]), expected.T)
    assert not np.asarray(model.linear2.bias[...]).any()  # biases by role: zero
    np.testing.assert_array_equal(np.asarray(model.bn.scale[...]), np.ones(8))


def test_mlp_gradients_agree_with_nnx_grad():
    model = MLP(4, 8, 3, rngs=nnx.Rngs(0))
    net = up.build(model)
    grads = up.gradients(net, X)
    native = _eval_grads(model, X)
    assert set(grads) == {"linear1.weight", "linear1.bias", "bn.weight", "bn.bias",
                          "linear2.weight", "linear2.bias"}
    np.testing.assert_allclose(grads["linear1.weight"], np.asarray(native.linear1.kernel[...]).T,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["bn.weight"], np.asarray(native.bn.scale[...]),
                               rtol=1e-5, atol=1e-6)


def test_cnn_kernels_read_channels_first_and_gradients_agree():
    model = CNN(rngs=nnx.Rngs(2))
    net = up.build(model)
    w = net["conv2"].weight
    assert (w.shape, w.axes) == ((8, 4, 3, 3), ("out", "in", "kh", "kw"))
    np.testing.assert_array_equal(w.numpy(),
                                  np.asarray(model.conv2.kernel[...]).transpose(3, 2, 0, 1))
    np.testing.assert_allclose(net.to_numpy(net(IMAGES)), np.asarray(model(IMAGES)), rtol=1e-6)
    w[0, 1, 2, 0] = 5.0  # a canonical write lands at the native (kh, kw, in, out) place
    assert float(model.conv2.kernel[...][2, 0, 1, 0]) == 5.0
    grads = up.gradients(net, IMAGES)
    native = _eval_grads(model, IMAGES)
    np.testing.assert_allclose(grads["conv1.weight"],
                               np.asarray(native.conv1.kernel[...]).transpose(3, 2, 0, 1),
                               rtol=1e-4, atol=1e-6)


def test_shared_submodule_is_one_storage_and_gradients_add():
    model = Shared(rngs=nnx.Rngs(3))
    net = up.build(model)
    assert list(up.params(net)) == ["encoder.weight", "encoder.bias", "shared.weight",
                                    "shared.bias", "head.weight", "head.bias"]
    assert net["again"].weight.aliases == ("shared.weight",)
    net["again"].weight[0, 0] = 9.0
    assert float(model.shared.kernel[...][0, 0]) == 9.0
    grads = up.gradients(net, X)
    native = nnx.grad(lambda m: m(X).sum())(model)
    # nnx's State files a shared variable under its alphabetically first path ("again");
    # unifparam names it after the first in definition order, as torch does ("shared")
    np.testing.assert_allclose(grads["shared.weight"], np.asarray(native.again.kernel[...]).T,
                               rtol=1e-5, atol=1e-6)


class Twin(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.a = nnx.Linear(4, 4, rngs=rngs)
        self.b = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return self.b(nnx.tanh(self.a(x)))


def test_explicit_tie_shares_one_variable_and_gradients_add():
    model = Twin(rngs=nnx.Rngs(4))
    net = up.build(model)
    up.tie(net, "a.weight", "b.weight")
    assert model.b.kernel is model.a.kernel  # one nnx.Variable, as NNX shares modules
    assert list(up.params(net)) == ["a.weight", "a.bias", "b.bias"]
    grads = up.gradients(net, X)
    native = nnx.grad(lambda m: m(X).sum())(model)
    np.testing.assert_allclose(grads["a.weight"], np.asarray(native.a.kernel[...]).T,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(up.TieError, match=r"\(4,\).*\(4, 4\)"):
        up.tie(net, "a.bias", "b.weight")


def test_checkpoint_round_trip_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = MLP(4, 8, 3, rngs=nnx.Rngs(6))
    net = up.build(model)
    up.initialize(net, init.Normal(std=0.5), seed=1, force_reinit=True)
    net(X, training=True)  # running statistics away from 0 / 1
    up.save(net, tmp_path / "mlp.safetensors")

    class TorchMLP(torch.nn.Module):  # the same attribute names
        def __init__(self):
            super().__init__()
            self.linear1 = torch.nn.Linear(4, 8)
            self.bn = torch.nn.BatchNorm1d(8)
            self.dropout = torch.nn.Dropout(0.5)
            self.linear2 = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.linear2(torch.relu(self.dropout(self.bn(self.linear1(x)))))

    tnet = up.build(TorchMLP())
    assert up.load(tnet, tmp_path / "mlp.safetensors").missing == ()
    for name, p in up.params(net).items():
        np.testing.assert_array_equal(up.params(tnet)[name].numpy(), p.numpy(), err_msg=name)
    np.testing.assert_allclose(tnet.to_numpy(tnet(X)), net.to_numpy(net(X)), rtol=1e-5,
                               atol=1e-6)  # eval mode: running statistics, no dropout

    up.initialize(tnet, init.Uniform(-1, 1), seed=2, force_reinit=True)
    up.save(tnet, tmp_path / "back.safetensors")
    report = up.load(net, tmp_path / "back.safetensors")
    assert report.missing == () and report.unexpected == ()
    np.testing.assert_array_equal(np.asarray(model.linear1.kernel[...]),
                                  tnet["linear1"].weight.numpy().T)
    np.testing.assert_allclose(net.to_numpy(net(X)), tnet.to_numpy(tnet(X)), rtol=1e-5,
                               atol=1e-6)


def test_spec_model_native_is_a_live_nnx_module_and_shared_layer_is_one_submodule():
    shared = nn.Dense(8, activation="tanh")
    net = up.build(nn.Sequential(nn.Dense(8), shared, shared, nn.Dense(2)), backend="flax:nnx")
    up.materialize(net, input_shape=(1, 4), abstract=True)
    module = net.native
    assert isinstance(module.layers[0].kernel.get_value(), jax.ShapeDtypeStruct)
    assert module.layers[1] is module.layers[2]
    up.initialize(net, init.Normal(std=0.5), seed=0)
    up.materialize(net)
    assert net.native is module and net[1].native is module.layers[1]
    np.testing.assert_allclose(np.asarray(module(X, training=False)), net.to_numpy(net(X)),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(module.layers[3].kernel[...]),
                                  net[3].weight.numpy().T)


def test_spec_batch_norm_follows_torch_conventions():
    net = up.build(nn.Sequential(nn.BatchNorm(momentum=0.25)), backend="flax:nnx")
    x = np.random.default_rng(3).random((6, 3), dtype=np.float32)
    y = net.to_numpy(net(x, training=True))
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net[0].running_mean.numpy(), 0.25 * mean, rtol=1e-5)
    np.testing.assert_allclose(net[0].running_var.numpy(), 0.75 + 0.25 * x.var(0, ddof=1),
                               rtol=1e-5)


def test_abstract_nnx_model_from_eval_shape_is_materialized_by_unifparam():
    abstract = nnx.eval_shape(lambda: MLP(4, 8, 3, rngs=nnx.Rngs(0)))  # shapes, no memory
    net = up.build(abstract)
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    up.initialize(net, init.Normal(std=0.1), seed=0)  # registers: nothing to fill yet
    assert net["linear1"].weight.state == "abstract"
    up.materialize(net)
    expected = init.Normal(std=0.1).generate(init.Target("linear1.weight", (8, 4)), 0)
    np.testing.assert_array_equal(np.asarray(abstract.linear1.kernel[...]), expected.T)
    np.testing.assert_array_equal(net["bn"].running_var.numpy(), np.ones(8))  # flax default
    assert net.to_numpy(net(X, training=True)).shape == (5, 3)  # rng state was filled too


class AutoEncoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.encoder = nnx.Linear(4, 3, rngs=rngs)
        self.decoder = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return self.decoder(nnx.tanh(self.encoder(x)))


def test_transposed_tie_of_native_layers_follows_writes_and_adds_gradients():
    model = AutoEncoder(rngs=nnx.Rngs(7))
    net = up.build(model)
    up.tie(net, "encoder.weight", "decoder.weight", transpose=True)
    assert list(up.params(net)) == ["encoder.weight", "encoder.bias", "decoder.bias"]
    net["encoder"].weight[2, 1] = 0.75
    assert net["decoder"].weight[1, 2] == 0.75
    w = net["encoder"].weight.numpy()  # (3, 4); the decoder computes with w.T, (4, 3)
    b1, b2 = net["encoder"].bias.numpy(), net["decoder"].bias.numpy()
    expected = np.tanh(X @ w.T + b1) @ w + b2
    np.testing.assert_allclose(net.to_numpy(net(X)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(model.decoder.kernel[...]), w)  # native view

    def total(w):
        return (jax.numpy.tanh(X @ w.T + b1) @ w + b2).sum()

    np.testing.assert_allclose(up.gradients(net, X)["encoder.weight"], jax.grad(total)(w),
                               rtol=1e-5, atol=1e-6)


def test_nnx_sequential_names_follow_its_layers_list():
    model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
                           nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
    net = up.build(model, backend="flax:nnx")
    assert list(up.params(net)) == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                    "layers.2.bias"]
    assert net["layers.2"].native is model.layers[2]
    np.testing.assert_allclose(net.to_numpy(net(X)), np.asarray(model(X)), rtol=1e-6)


def test_spec_block_is_an_nnx_module_named_like_the_block():
    from unifparam.conformance._helpers import FancyMLP
    x = np.random.default_rng(4).random((2, 20), dtype=np.float32)
    net = up.build(FancyMLP(), backend="flax:nnx")
    up.initialize(net, seed=0)
    y = net.to_numpy(net(x))
    module = net.native
    assert net["linear"].native is module.linear
    assert isinstance(module.rand_weight, nnx.Variable)
    assert not isinstance(module.rand_weight, nnx.Param)  # trainable=False: not in gradients
    _, params, _ = nnx.split(module, nnx.Param, ...)
    assert sorted(path for path, _ in nnx.to_flat_state(params)) == [("linear", "bias"),
                                                                     ("linear", "kernel")]
    np.testing.assert_array_equal(np.asarray(module.rand_weight[...]),
                                  net.rand_weight.numpy())
    np.testing.assert_allclose(np.asarray(module(x)), y, rtol=1e-6)
    native = nnx.grad(lambda m: m(x))(module)  # the block's while loop runs under jax.grad
    grads = up.gradients(net, x)
    assert set(grads) == {"linear.weight", "linear.bias"}
    np.testing.assert_allclose(grads["linear.weight"], np.asarray(native.linear.kernel[...]).T,
                               rtol=1e-5, atol=1e-6)
    again = up.build(module)  # the live module adopted back: the same names
    assert sorted((n, p.trainable) for n, p in up.params(again).items()) == [
        ("linear.bias", True), ("linear.weight", True), ("rand_weight", False)]


def test_named_sequential_children_are_an_nnx_dict_of_their_names():
    seq = nn.Sequential({"hidden": nn.Dense(8, activation="relu"), "out": nn.Dense(2)})
    net = up.build(nn.Sequential().add("block 0", seq), backend="flax:nnx")
    net(X)
    inner = net.native.layers["block 0"]
    assert isinstance(inner.layers, nnx.Dict) and list(inner.layers) == ["hidden", "out"]
    assert net["block 0.out"].native is inner.layers["out"]
    assert up.params(net)["block 0.hidden.weight"].native_name == \
        "layers.block 0.layers.hidden.kernel"
    assert sorted(up.params(up.build(net.native))) == sorted(up.params(net))  # adopted back


class MyRMSNorm(nnx.Module):
    """A norm written by hand (as Llama's), with a ``weight`` and a projection ``kernel``."""

    def __init__(self, features: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(np.ones(features, np.float32))
        self.proj = nnx.Linear(features, 3, rngs=rngs)

    def __call__(self, x):
        return self.proj(x * self.weight[...] / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6))


def test_roles_of_a_hand_written_norm_agree_with_torch():
    torch = pytest.importorskip("torch")

    class TorchRMSNorm(torch.nn.Module):
        def __init__(self, features):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(features))
            self.proj = torch.nn.Linear(features, 3)

    def roles(net):
        return {n: (p.role, p.axes, p.shape) for n, p in up.params(net).items()}

    nnx_roles = roles(up.build(MyRMSNorm(4, rngs=nnx.Rngs(0))))
    assert nnx_roles == roles(up.build(TorchRMSNorm(4), backend="torch"))
    assert nnx_roles["weight"][0] == "scale"  # unifparam.roles decides, for every adapter
