"""Adopting native Gluon blocks: names equal Gluon's, sharing is one storage, the verbs work.

Runs in the mxnet venv (``nox -s mxnet``): MXNet 1.9.1 needs numpy < 1.24.
"""

import numpy as np
import pytest

import unifparam as up
from unifparam import init

mx = pytest.importorskip("mxnet", reason="MXNet runs in its own venv: nox -s mxnet")
from mxnet import autograd, nd  # noqa: E402
from mxnet.gluon import nn as gnn  # noqa: E402


def x(*shape):
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def shared_nested():
    shared = gnn.Dense(8, in_units=8, activation="relu")
    block = gnn.HybridSequential()
    block.add(gnn.Dense(8, in_units=4, activation="relu"), shared, shared)
    net = gnn.HybridSequential()
    net.add(block, gnn.BatchNorm(in_channels=8), gnn.Dense(1, in_units=8))
    return net


def test_adopted_names_are_gluons_structural_names():
    model = shared_nested()
    net = up.build(model)
    assert net.backend == "mxnet"
    gluon = list(model._collect_params_with_prefix())  # save_parameters' keys
    ours = list(up.params(net))
    assert ours == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "1.weight", "1.bias",
                    "1.running_mean", "1.running_var", "2.weight", "2.bias"]
    norm = {"1.weight": "1.gamma", "1.bias": "1.beta"}
    assert [n for n in gluon if not n.startswith("0.2.")] == [norm.get(n, n) for n in ours]
    assert up.params(net)["0.1.weight"].aliases == ("0.2.weight",)
    assert net[0][2].weight.native is model[0][1].weight
    assert net[1].weight.native_name == "1.gamma" and net[1].weight.role == "scale"
    assert [p.trainable for p in up.params(net[1]).values()] == [True, True, False, False]
    assert [p.state for p in up.params(net).values()] == ["abstract"] * 10  # no initialize()
    assert "(0): Dense(4 -> 8, Activation(relu))" in repr(net)  # its `act` is no layer


def test_parameters_shared_through_params_are_one_storage():
    first = gnn.Dense(4, in_units=4)
    second = gnn.Dense(4, in_units=4, params=first.params)  # Gluon 1.x sharing
    model = gnn.HybridSequential()
    model.add(first, second)
    net = up.build(model)
    assert list(up.params(net)) == ["0.weight", "0.bias"]
    assert net[1].weight.aliases == ("0.weight",) and net[1].bias.aliases == ("0.bias",)
    net(x(2, 4))
    net[1].weight[0, 0] = 3
    assert net[0].weight[0, 0] == 3 and model[0].weight.data()[0, 0].asscalar() == 3


def test_lazy_native_block_lists_unknown_dims_and_initializes_once(capsys):
    model = gnn.HybridSequential()
    model.add(gnn.Dense(16, activation="relu"), gnn.Dense(2))
    net = up.build(model)
    assert [p.shape for p in up.params(net).values()] == [(16, None), (16,), (2, None), (2,)]
    assert [p.state for p in up.params(net).values()] == ["deferred"] * 4
    up.initialize(net, lambda n, s, rng: print("Init", n, s) or np.ones(s))
    assert capsys.readouterr().out == ""
    y = net(x(3, 5))
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (16, 5)",
                                                    "Init 1.weight (2, 16)"]
    assert y.shape == (3, 2)
    np.testing.assert_array_equal(model[0].weight.data().asnumpy(), np.ones((16, 5)))
    y2 = net(x(3, 5))
    assert capsys.readouterr().out == "" and (y2 == y).asnumpy().all()


def test_native_abstract_materialization_allocates_no_parameter():
    model = gnn.HybridSequential()
    model.add(gnn.Dense(300, activation="relu"), gnn.Dense(200))
    net = up.build(model)
    up.initialize(net, init.Normal(std=0.02), seed=0)
    up.materialize(net, input_shape=(1, 100), abstract=True)
    assert [p.state for p in up.params(net).values()] == ["abstract"] * 4
    assert all(p.native._data is None for p in up.params(net).values())
    assert net[1].weight.shape == (200, 300)
    up.materialize(net)
    expected = init.Normal(std=0.02).generate(init.Target("1.weight", (200, 300)), 0)
    np.testing.assert_array_equal(net[1].weight.numpy(), expected)


class Imperative(gnn.Block):
    """A plain (non-hybrid) Block: its forward is Python, with no symbolic form."""

    def __init__(self):
        super().__init__()
        self.encoder = gnn.Dense(6, activation="tanh")
        self.decoder = gnn.Dense(3)

    def forward(self, inputs):
        h = self.encoder(inputs)
        return self.decoder(h * 2 if h.shape[0] > 0 else h)


def test_plain_block_infers_shapes_abstractly_through_its_hybrid_parts():
    model = Imperative()
    net = up.build(model)
    assert list(up.params(net)) == ["encoder.weight", "encoder.bias", "decoder.weight",
                                    "decoder.bias"]
    up.materialize(net, input_shape=(2, 5), abstract=True)
    assert [(p.shape, p.state) for p in up.params(net).values()] == [
        ((6, 5), "abstract"), ((6,), "abstract"), ((3, 6), "abstract"), ((3,), "abstract")]
    assert model.encoder.weight._data is None
    assert "forward" not in vars(model.encoder)  # the shape-only forward is gone again
    y = net(x(2, 5))
    v = {n: p.numpy() for n, p in up.params(net).items()}
    ref = np.tanh(x(2, 5) @ v["encoder.weight"].T + v["encoder.bias"]) * 2
    np.testing.assert_allclose(y.asnumpy(), ref @ v["decoder.weight"].T + v["decoder.bias"],
                               rtol=1e-5, atol=1e-6)


class Scaled(gnn.Block):
    """A plain Block that reads a Parameter of its own in Python code."""

    def __init__(self, in_units=0):
        super().__init__()
        self.body = gnn.Dense(4)
        self.scale = self.params.get("scale", shape=(1, in_units), init=mx.init.One(),
                                     allow_deferred_init=True)

    def forward(self, inputs):
        return self.body(inputs * self.scale.data())


def test_plain_block_reading_its_own_parameter():
    model = Scaled(in_units=3)
    net = up.build(model)
    up.materialize(net, input_shape=(2, 3), abstract=True)
    assert [(n, p.state) for n, p in up.params(net).items()] == [
        ("scale", "abstract"), ("body.weight", "abstract"), ("body.bias", "abstract")]
    assert model.scale._data is None  # the zeros of the shape-only run are gone
    y = net(x(2, 3))
    assert (net.scale.numpy() == 1).all() and y.shape == (2, 4)
    unknown = up.build(Scaled())
    with pytest.raises(up.UnsupportedError, match=r"'scale'.*HybridBlock"):
        up.materialize(unknown, input_shape=(2, 3), abstract=True)


def test_explicit_tie_on_native_blocks_and_gradients_add_up():
    model = gnn.HybridSequential()
    model.add(gnn.Dense(3, in_units=3, activation="tanh"), gnn.Dense(3, in_units=3))
    model.initialize()
    net = up.build(model)
    up.tie(net, net[0], net[1])
    assert model[1].weight is model[0].weight
    assert list(model.collect_params()) == [model[0].weight.name, model[0].bias.name]
    data = x(2, 3)
    g = up.gradients(net, data)
    w = model[0].weight.data().copy()
    b = model[0].bias.data().copy()
    w.attach_grad()
    with autograd.record():
        h = nd.tanh(nd.dot(nd.array(data), w, transpose_b=True) + b)
        total = (nd.dot(h, w, transpose_b=True) + b).sum()
    total.backward()
    np.testing.assert_allclose(g["0.weight"], w.grad.asnumpy(), rtol=1e-5)


def test_transposed_tie_on_a_hybridized_model():
    model = gnn.HybridSequential()
    model.add(gnn.Dense(3, in_units=6, activation="tanh"), gnn.Dense(6, in_units=3))
    model.initialize()
    model.hybridize()
    net = up.build(model)
    data = x(2, 6)
    net(data)  # builds Gluon's CachedOp, which the tie must not reuse
    up.tie(net, "0.weight", "1.weight", transpose=True)
    w, b0, b1 = (net[0].weight.numpy(), net[0].bias.numpy(), net[1].bias.numpy())
    expected = np.tanh(data @ w.T + b0) @ w + b1
    np.testing.assert_allclose(net(data).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.bias"]


def test_native_apply_visits_containers_too():
    net = up.build(up.nn.Sequential(up.nn.Dense(8, activation="relu"), up.nn.Dense(1)),
                   backend="mxnet")
    net(x(2, 4))
    seen = []

    def xavier(block):
        seen.append(type(block).__name__)
        if isinstance(block, gnn.Dense):
            block.weight.initialize(mx.init.Xavier(), force_reinit=True)

    net.native.apply(xavier)
    assert seen == ["Dense", "Dense", "HybridSequential"]
    assert np.abs(net[0].weight.numpy()).max() <= np.sqrt(3 / 6)


def test_gluon_default_initializer_is_p12s_default():
    net = up.build(up.nn.Sequential(up.nn.Dense(64), up.nn.BatchNorm(), up.nn.LayerNorm()),
                   backend="mxnet")
    net(x(2, 128))
    w = net[0].weight.numpy()
    assert np.abs(w).max() <= 0.07 and w.std() > 0.03  # U(-0.07, 0.07)
    assert not net[0].bias.numpy().any()
    for layer in (net[1], net[2]):
        assert (layer.weight.numpy() == 1).all() and not layer.bias.numpy().any()
    assert (net[1].running_var.numpy() == 1).all()
    up.initialize(net, init.Constant(5), force_reinit=True)
    up.initialize(net, force_reinit=True)  # None: back to the framework's default
    assert np.abs(net[0].weight.numpy()).max() <= 0.07 and not net[0].bias.numpy().any()


def test_a_native_initialize_choice_is_the_default_it_fills_with():
    model = gnn.HybridSequential()
    model.add(gnn.Dense(4))
    model.initialize(mx.init.Constant(0.5))  # deferred in Gluon: shapes unknown
    net = up.build(model)
    net(x(2, 3))
    np.testing.assert_array_equal(net[0].weight.numpy(), np.full((4, 3), 0.5, np.float32))
    assert not net[0].bias.numpy().any()  # the bias keeps its own init (zeros)


def test_batch_norm_statistics_follow_pytorchs_convention():
    spec = up.nn.Sequential(up.nn.BatchNorm(momentum=0.1))
    net = up.build(spec, backend="mxnet")
    data = x(5, 3) * 4
    y = net(data, training=True).asnumpy()
    np.testing.assert_allclose(net[0].running_mean.numpy(), 0.1 * data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(net[0].running_var.numpy(), 0.9 + 0.1 * data.var(0, ddof=1),
                               rtol=1e-5)
    normed = (data - data.mean(0)) / np.sqrt(data.var(0) + 1e-5)  # biased, as torch
    np.testing.assert_allclose(y, normed, rtol=1e-4, atol=1e-5)
    eval_y = net(data).asnumpy()
    ref = (data - net[0].running_mean.numpy()) / np.sqrt(net[0].running_var.numpy() + 1e-5)
    np.testing.assert_allclose(eval_y, ref, rtol=1e-4, atol=1e-5)


def test_dense_applies_to_the_last_axis_like_the_spec():
    net = up.build(up.nn.Sequential(up.nn.Dense(5, activation="gelu")), backend="mxnet")
    up.initialize(net, init.Normal(std=0.5), seed=0)
    data = x(2, 3, 4)
    y = net(data).asnumpy()
    pre = data @ net[0].weight.numpy().T + net[0].bias.numpy()
    from math import erf
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    np.testing.assert_allclose(y, gelu(pre), rtol=1e-4, atol=1e-5)


def test_checkpoint_of_an_adopted_block_loads_into_a_spec_model(tmp_path):
    model = gnn.HybridSequential()
    model.add(gnn.Dense(8, activation="relu"), gnn.Dense(2))
    model.initialize()
    native = up.build(model)
    data = x(3, 4)
    y = native(data).asnumpy()
    up.save(native, tmp_path / "gluon.safetensors")
    spec = up.build(up.nn.Sequential(up.nn.Dense(8, activation="relu"), up.nn.Dense(2)),
                    backend="mxnet")
    up.load(spec, tmp_path / "gluon.safetensors")
    np.testing.assert_allclose(spec(data).asnumpy(), y, rtol=1e-6)


def test_gradients_through_batch_norm_use_its_running_statistics():
    net = up.build(up.nn.Sequential(up.nn.Dense(3), up.nn.BatchNorm()), backend="mxnet")
    data = x(4, 2)
    net(data, training=True)  # running statistics move away from 0 and 1
    g = up.gradients(net, data)  # inference mode: y = (h - mean) / sqrt(var + eps) * w + b
    scale = net[1].weight.numpy() / np.sqrt(net[1].running_var.numpy() + 1e-5)
    np.testing.assert_allclose(g["0.bias"], 4 * scale, rtol=1e-5)  # batch statistics: 0


class _TwoOutputs(gnn.Block):
    """A Gluon block returning (float output, integer argmax): only the first has a gradient."""

    def __init__(self):
        super().__init__()
        self.dense = gnn.Dense(3, in_units=4)

    def forward(self, x):
        y = self.dense(x)
        return y, nd.argmax(y, axis=1).astype("int32")


def test_gradients_without_loss_sum_the_float_outputs_only():
    model = _TwoOutputs()
    model.initialize()
    net = up.build(model)
    inputs = x(2, 4)
    grads = up.gradients(net, inputs)
    np.testing.assert_allclose(grads["dense.bias"], np.full(3, 2.0), rtol=1e-6)
    np.testing.assert_allclose(grads["dense.weight"], np.tile(inputs.sum(0), (3, 1)), rtol=1e-5)


class _IdsOnly(_TwoOutputs):
    def forward(self, x):
        return super().forward(x)[1]


def test_gradients_of_an_integer_output_name_the_fix():
    model = _IdsOnly()
    model.initialize()
    net = up.build(model)
    before = up.params(net)["dense.weight"].numpy().copy()
    with pytest.raises(up.OutputError, match="loss=lambda out"):
        up.gradients(net, x(2, 4))
    np.testing.assert_array_equal(up.params(net)["dense.weight"].numpy(), before)


class RMSNorm(gnn.Block):
    """A norm written by hand, as Llama's: its ``weight`` is a scale."""

    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.weight = self.params.get("weight", shape=(features,))

    def forward(self, x):
        return x * self.weight.data()


def test_roles_come_from_the_shared_rules_of_unifparam_roles():
    net = gnn.Sequential()
    net.add(gnn.Conv2D(4, 3, in_channels=2), gnn.Conv2DTranspose(4, 3, in_channels=2),
            RMSNorm(4))
    listed = {n: (p.role, p.axes) for n, p in up.params(up.build(net)).items()}
    assert listed["0.weight"] == ("weight", ("out", "in", "kh", "kw"))
    # a transposed convolution's weight is (in, out, kh, kw): no axes, as torch's
    assert listed["1.weight"] == ("weight", None)
    assert listed["2.weight"] == ("scale", ("out",))
