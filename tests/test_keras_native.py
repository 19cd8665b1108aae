"""The Keras adapter on real Keras models: adoption, layouts, ties, abstract materialization.

Runs on the Keras backend of this process (``KERAS_BACKEND``, else Keras's own config); run
it once per backend, e.g. ``KERAS_BACKEND=jax pytest tests/test_keras_native.py``. The
backend-conflict cases run in subprocesses.
"""

import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import unifparam as up  # noqa: E402
from unifparam import init, nn  # noqa: E402

BACKEND = f"keras:{keras.backend.backend()}"
L = keras.layers


def x(*shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def kernel(layer):
    return up.get_backend(BACKEND).to_numpy(layer.kernel)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.enc = L.Dense(3)
        self.blocks = [L.Dense(5, activation="relu"), L.Dense(5)]
        self.norm = L.BatchNormalization()

    def call(self, inputs, training=False):
        h = self.enc(inputs)
        for block in self.blocks:
            h = block(h)
        return self.norm(h, training=training)


def test_a_keras_model_is_detected_as_keras():
    assert up.build(keras.Sequential([L.Dense(2)])).backend == BACKEND  # also on torch-Keras


def test_adopt_sequential_names_shapes_and_transposed_kernels():
    model = keras.Sequential([L.Dense(8, activation="relu"), L.Dense(1)])
    net = up.build(model, backend=BACKEND)
    assert [(n, p.shape, p.state) for n, p in up.params(net).items()] == [
        ("0.weight", (8, None), "deferred"), ("0.bias", (8,), "deferred"),
        ("1.weight", (1, None), "deferred"), ("1.bias", (1,), "deferred")]
    up.initialize(net, init.Normal(std=0.5), seed=3)
    y = net.to_numpy(net(x(2, 4)))
    w0, w1 = net[0].weight.numpy(), net[1].weight.numpy()
    assert w0.shape == (8, 4) and w1.shape == (1, 8)
    np.testing.assert_array_equal(kernel(model.layers[0]), w0.T)
    np.testing.assert_array_equal(
        w0, init.Normal(std=0.5).generate(init.Target("0.weight", (8, 4)), 3))
    ref = np.maximum(x(2, 4) @ w0.T + net[0].bias.numpy(), 0) @ w1.T + net[1].bias.numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert net[0].weight.native_name.endswith("/kernel")
    assert net[0].weight.native is model.layers[0].kernel


def test_adopt_functional_with_a_layer_used_twice_lists_it_once():
    inputs = keras.Input((4,))
    shared = L.Dense(4, activation="tanh")
    outputs = L.Dense(2)(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    net = up.build(model, backend=BACKEND)
    assert [(n, p.shape) for n, p in up.params(net).items()] == [
        ("0.weight", (4, 4)), ("0.bias", (4,)), ("1.weight", (2, 4)), ("1.bias", (2,))]
    g = up.gradients(net, x(3, 4))
    assert {k: v.shape for k, v in g.items()} == {n: p.shape for n, p in up.params(net).items()}


def test_adopt_sequential_with_a_layer_used_twice_aliases_it():
    shared = L.Dense(4)
    model = keras.Sequential([keras.Input((4,)), shared, shared, L.Dense(1)])
    net = up.build(model, backend=BACKEND)
    assert list(up.params(net)) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert net[1].weight.aliases == ("0.weight",)
    net[1].weight[0, 0] = 7
    assert net[0].weight[0, 0] == 7 and kernel(shared)[0, 0] == 7


def test_adopt_subclassed_by_attribute_paths_abstract_then_real():
    model = Subclassed()
    net = up.build(model, backend=BACKEND)
    assert list(up.params(net)) == [
        "enc.weight", "enc.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
        "blocks.1.bias", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"]
    up.materialize(net, input_shape=(2, 4), abstract=True)
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    assert all(v._value is None for v in model.variables)  # no parameter memory
    assert net["blocks.1"].weight.shape == (5, 5) and net.norm.running_var.shape == (5,)
    up.materialize(net)
    assert not net.norm.running_var.trainable and net.norm.weight.trainable
    np.testing.assert_array_equal(net.norm.running_var.numpy(), np.ones(5, np.float32))
    assert net.to_numpy(net(x(2, 4))).shape == (2, 5)
    assert "norm.running_mean" not in up.gradients(net, x(2, 4))


def test_spec_model_natives_are_keras_layers_with_transposed_kernels():
    net = up.build(nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.Flatten(), nn.Dense(2)),
                   backend=BACKEND)
    net(x(2, 3, 5, 5))
    conv, dense = net[0].native, net[2].native
    assert isinstance(conv, L.Conv2D) and isinstance(dense, L.Dense)
    assert isinstance(net.native, keras.Model)
    np.testing.assert_array_equal(kernel(conv), net[0].weight.numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kernel(dense), net[2].weight.numpy().T)
    assert net[2].weight.native_name == "2/kernel"
    g = up.gradients(net, x(2, 3, 5, 5))
    assert g["0.weight"].shape == (4, 3, 3, 3) and g["2.weight"].shape == (2, 100)


def test_spec_abstract_materialization_creates_no_values():
    net = up.build(nn.Sequential(nn.Dense(64), nn.Dense(10)), backend=BACKEND)
    up.materialize(net, input_shape=(1, 32), abstract=True)
    variables = net.native.variables
    assert len(variables) == 4 and all(v._value is None for v in variables)
    up.materialize(net)
    assert all(v._value is not None for v in variables)


def test_allocate_from_layer_inputs_alone():
    from unifparam import Plan
    net = up.build(nn.Sequential(nn.Dense(6), nn.Dense(2)), backend=BACKEND)
    be = net._st.backend
    state = be.allocate(net._st.native, Plan({}, layer_inputs={"0": (1, 3), "1": (1, 6)}))
    assert [tuple(v.shape) for v in state.model.variables] == [(3, 6), (6,), (6, 2), (2,)]


def test_transposed_tie_on_an_adopted_model_keeps_one_variable():
    model = keras.Sequential([keras.Input((6,)), L.Dense(3, activation="tanh"), L.Dense(6)])
    net = up.build(model, backend=BACKEND)
    up.tie(net, "0.weight", "1.weight", transpose=True)
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.bias"]
    assert len(model.trainable_variables) == 3
    np.testing.assert_array_equal(net[1].weight.numpy(), net[0].weight.numpy().T)
    net[1].weight[5, 2] = 0.25
    assert net[0].weight[2, 5] == 0.25
    assert type(model.layers[1]).__name__ == "Dense"  # serializes as a Dense
    g = up.gradients(net, x(2, 6))
    assert g["0.weight"].shape == (3, 6)


def test_batchnorm_training_updates_running_stats_like_torch():
    net = up.build(nn.Sequential(nn.BatchNorm()), backend=BACKEND)
    data = x(8, 3) * 4
    net(data, training=True)
    m = 0.1
    np.testing.assert_allclose(net[0].running_mean.numpy(), m * data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(net[0].running_var.numpy(), (1 - m) + m * data.var(0, ddof=1),
                               rtol=1e-5)


@pytest.mark.parametrize("first, then", [("jax", "tensorflow"), ("tensorflow", "torch")])
def test_keras_imported_with_another_backend_is_a_conflict(python, first, then):
    done = python(textwrap.dedent(f"""
        import keras, unifparam
        try:
            unifparam.get_backend("keras:{then}")
        except unifparam.BackendConflictError as e:
            print("CONFLICT", e)
        """), {"KERAS_BACKEND": first})
    assert done.returncode == 0, done.stderr
    assert "CONFLICT" in done.stdout and repr(first) in done.stdout and repr(then) in done.stdout
    assert "new process" in done.stdout and f"KERAS_BACKEND={then}" in done.stdout


def test_variant_sets_keras_backend_before_keras_is_imported(python):
    done = python(textwrap.dedent("""
        import sys, unifparam
        assert "keras" not in sys.modules
        import unifparam_keras
        assert "keras" not in sys.modules
        unifparam.get_backend("keras:jax")
        import keras
        print(keras.backend.backend())
        """), {"KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "jax"


def test_variant_whose_framework_is_missing_says_how_to_install(python):
    done = python(textwrap.dedent("""
        import importlib.util, unifparam
        find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "jax" else find(name, *a)
        try:
            unifparam.get_backend("keras:jax")
        except unifparam.BackendNotInstalledError as e:
            print("MISSING", e)
        """))
    # run from the clone's root (conftest.run_python): the command that works from there
    assert "MISSING" in done.stdout and "pip install -e '.[jax]'" in done.stdout


def test_adopted_functional_model_with_two_inputs_takes_net_a_b():
    a, b = keras.Input((4,)), keras.Input((6,))
    h = L.Concatenate()([L.Dense(3)(a), L.Dense(3)(b)])
    model = keras.Model([a, b], L.Dense(1)(h))
    net = up.build(model)
    x1, x2 = x(2, 4), x(2, 6, seed=1)
    np.testing.assert_allclose(up.to_numpy(net(x1, x2)), up.to_numpy(model([x1, x2])),
                               rtol=1e-6)
    assert set(up.gradients(net, x1, x2)) == set(up.params(net))
