"""Gluon model_zoo models adopted as they are (issue 23): ``load`` into a fresh model sizes
its deferred parameters from the file's shapes, as on every other backend. Runs in the
mxnet venv (``nox -s mxnet``); random weights, nothing downloaded."""

import os

import numpy as np
import pytest

import unifparam as up

mx = pytest.importorskip("mxnet")

X = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
BIG = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
ZOO = {"resnet18_v1": X, "resnet18_v2": X, "mobilenet0.25": X, "mobilenetv2_0.25": X,
       "squeezenet1.1": BIG, "densenet121": BIG, "mobilenetv2_1.0": X}
if os.environ.get("UNIFPARAM_SWEEP") == "full":  # the adoption sweep's longer list
    ZOO.update({"resnet34_v1": X, "vgg11": BIG, "alexnet": BIG, "mobilenet1.0": X})


def _zoo(name):
    from mxnet.gluon.model_zoo import vision
    return vision.get_model(name, classes=10)


@pytest.mark.parametrize("name", list(ZOO))
def test_model_zoo_load_into_a_fresh_model_needs_no_materialize(name, tmp_path):
    x = ZOO[name]
    source = _zoo(name)
    source.initialize(mx.init.Xavier())
    net = up.build(source)
    want = net.to_numpy(net(x))
    assert len(up.params(net)) == len(list(source.collect_params().keys()))  # every Gluon one
    up.save(net, tmp_path / "m.safetensors")
    fresh = up.build(_zoo(name))
    assert "deferred" in {p.state for p in up.params(fresh).values()}
    up.load(fresh, tmp_path / "m.safetensors")  # sized by the file
    assert {p.state for p in up.params(fresh).values()} == {"materialized"}
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(up.params(fresh)[n].numpy(), p.numpy(), err_msg=n)
    np.testing.assert_allclose(fresh.to_numpy(fresh(x)), want, rtol=1e-5, atol=1e-6)
