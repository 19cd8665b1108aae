"""Keras's own deferred-build and ``trainable`` semantics, kept through unifparam.

Each case mirrors a Keras test (``keras/src/models/sequential_test.py``,
``keras/src/layers/layer_test.py``), rewritten to go through unifparam on an adopted
model; the upstream test is named in each docstring. Runs on this process's Keras backend:
``KERAS_BACKEND=jax|tensorflow|torch pytest tests/test_native_semantics_keras.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import unifparam as up  # noqa: E402
from unifparam import init  # noqa: E402

L = keras.layers
X = np.random.default_rng(0).random((3, 5), dtype=np.float32)


def _deferred() -> keras.Sequential:
    return keras.Sequential([L.Dense(4), L.BatchNormalization(), L.Dense(2)])


def _numpy(value):
    return np.asarray(up.to_numpy(value))


# ---- a registered initializer, whoever builds the model first ------------------------------
def test_native_first_call_applies_the_registered_initializer_before_computing():
    """sequential_test.py test_basic_flow_deferred: the model builds on its first call."""
    m = keras.Sequential([L.Dense(4), L.Dense(2)])
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = m(X)  # Keras's own call, as model.fit and model.predict make it
        got = {n: p.numpy() for n, p in up.params(net).items()}
    assert np.all(got["0.weight"] == 0.25) and np.all(got["1.bias"] == 0)
    np.testing.assert_allclose(_numpy(y), np.outer(X.sum(1), np.full(2, 0.25 * 0.25 * 4)),
                               rtol=1e-6)
    assert all(p.state == "materialized" for p in up.params(net).values())


def test_native_first_call_gives_the_values_unifparam_would_give():
    a, b = _deferred(), _deferred()
    na, nb = up.build(a), up.build(b)
    up.initialize(na, init.Normal(std=0.3), seed=7)
    up.initialize(nb, init.Normal(std=0.3), seed=7)
    a(X)                   # Keras first
    up.materialize(nb, X)  # unifparam first
    for (n, p), q in zip(up.params(na).items(), up.params(nb).values()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


# ---- trainable, read from Keras every time ---------------------------------------------------
def test_a_layer_frozen_before_adoption_is_not_trainable():
    """layer_test.py test_trainable_init: Dense(trainable=False)."""
    m = keras.Sequential([keras.Input((5,)), L.Dense(4, trainable=False), L.Dense(2)])
    flags = {n: p.trainable for n, p in up.params(up.build(m)).items()}
    assert flags == {"0.weight": False, "0.bias": False, "1.weight": True, "1.bias": True}


def test_a_layer_frozen_after_adoption_gets_no_gradient():
    """layer_test.py test_trainable_setting: trainable set after the layer exists."""
    m = keras.Sequential([keras.Input((5,)), L.Dense(4), L.BatchNormalization(), L.Dense(2)])
    net = up.build(m)
    assert "0.weight" in up.gradients(net, X)
    m.layers[0].trainable = False
    assert up.params(net)["0.weight"].trainable is False
    assert sorted(up.gradients(net, X)) == ["1.bias", "1.weight", "2.bias", "2.weight"]
    assert up.params(net)["1.running_mean"].trainable is False  # statistics never train
    m.trainable = False  # the whole model: nothing trains
    assert up.gradients(net, X) == {}
    m.trainable = True
    assert "0.weight" in up.gradients(net, X)


def test_a_frozen_variable_is_not_trainable():
    """variables_test.py: Variable.trainable set on one variable."""
    m = keras.Sequential([keras.Input((5,)), L.Dense(4)])
    net = up.build(m)
    m.layers[0].kernel.trainable = False
    assert up.params(net)["0.weight"].trainable is False
    assert sorted(up.gradients(net, X)) == ["0.bias"]


# ---- build --------------------------------------------------------------------------------
def test_a_built_model_refuses_a_conflicting_input_shape():
    """sequential_test.py: building with another input shape raises 'already been
    configured'; through unifparam it is an InputShapeError, and nothing changes."""
    m = keras.Sequential([keras.Input((5,)), L.Dense(4)])
    net = up.build(m)
    before = net[0].weight.numpy()
    with pytest.raises(up.InputShapeError, match=r"\(2, 7\)"):
        up.materialize(net, input_shape=(2, 7))
    with pytest.raises(ValueError, match="already been configured"):  # Keras's own
        m.build((None, 7))
    up.materialize(net, input_shape=(2, 5))  # the shape it was built for is fine
    np.testing.assert_array_equal(net[0].weight.numpy(), before)


def test_load_builds_an_unbuilt_sequential_from_the_file(tmp_path):
    """sequential_test.py test_basic_flow_deferred, then weights loaded before any call."""
    src = keras.Sequential([keras.Input((5,)), L.Dense(4), L.BatchNormalization(), L.Dense(2)])
    path = str(tmp_path / "m.safetensors")
    up.save(up.build(src), path)
    dst = _deferred()
    assert not dst.built
    up.load(up.build(dst), path)
    assert [tuple(v.shape) for v in dst.weights] == [tuple(v.shape) for v in src.weights]
    np.testing.assert_allclose(_numpy(dst(X)), _numpy(src(X)), rtol=1e-6)


def test_fit_on_a_deferred_model_starts_from_the_registered_initializer():
    """trainer_test.py: model.fit builds an unbuilt model itself (symbolically; inside a
    tf.function on TensorFlow); the registered values are those it starts from."""
    y = np.zeros((3, 2), np.float32)
    fitted = []
    for first in ("keras", "unifparam"):
        m = _deferred()
        net = up.build(m)
        up.initialize(net, init.Normal(std=0.3), seed=3)
        if first == "unifparam":
            up.materialize(net, X)
        m.compile(optimizer="sgd", loss="mse")
        with warnings.catch_warnings():
            warnings.simplefilter("error", up.InitializerSkippedWarning)
            m.fit(X, y, epochs=1, batch_size=3, shuffle=False, verbose=0)
            fitted.append({n: p.numpy() for n, p in up.params(net).items()})
    for name in fitted[0]:
        np.testing.assert_allclose(fitted[0][name], fitted[1][name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_handle_drives_its_own_copied_model(how):
    """sequential_test.py test_pickleable: a Keras model pickles; its handle too."""
    import copy
    import pickle
    m = keras.Sequential([keras.Input((5,)), L.Dense(4), L.Dense(2)])
    net = up.build(m)
    twin = copy.deepcopy(net) if how == "deepcopy" else pickle.loads(pickle.dumps(net))
    twin[0].weight[...] = 2.0
    assert np.all(_numpy(twin.native.layers[0].kernel) == 2.0)
    assert not np.all(net[0].weight.numpy() == 2.0)
    np.testing.assert_allclose(_numpy(twin(X)), _numpy(twin.native(X)), rtol=1e-6)


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = L.Dense(4, activation="relu")
        self.out = L.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_subclassed_model_built_by_its_first_call_gets_the_initializer():
    """sequential_test.py test_basic_flow_as_a_submodel / model_test.py: a subclassed
    model's layers build on its first call."""
    m = _Sub()
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", up.InitializerSkippedWarning)
        y = _numpy(m(X))
    assert np.all(net.hidden.weight.numpy() == 0.25) and np.all(net.out.weight.numpy() == 0.25)
    np.testing.assert_allclose(y, np.outer(X.sum(1), np.full(2, 0.25 * 0.25 * 4)), rtol=1e-6)
