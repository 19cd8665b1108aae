"""Sharded materialization: layout checks in-process; meshes and ranks in subprocesses."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import unifparam
from unifparam import LayoutError, nn

HERE = Path(__file__).parent / "sharding"
AXES = {"data": 2, "model": 4}


@pytest.fixture
def net():
    pytest.importorskip("torch")
    model = unifparam.build(nn.Sequential(nn.Dense(8), nn.Activation("relu"), nn.Dense(6)),
                            backend="torch")
    unifparam.materialize(model, input_shape=(2, 12), abstract=True)
    return model


def test_first_match_wins_and_unmatched_replicated(net):
    got = unifparam.placements(net, {"2.weight": (None, "data"), "*.weight": ("model", None)},
                               AXES)
    assert got == {"0.weight": ("model", None), "0.bias": (None,),
                   "2.weight": (None, "data"), "2.bias": (None,)}


@pytest.mark.parametrize("layout, match", [
    ({"*.weight": ("tensor", None)}, r"names mesh axis 'tensor'.*\('data', 'model'\)"),
    ({"*.weight": ("model", "model")}, "uses a mesh axis twice"),
    ({"*.weight": ("model",)}, "has 1 dimensions but parameter '0.weight'"),
    ({"2.weight": ("model", None)}, r"dimension 0 of parameter '2.weight' \(6, 8\).*size 4"),
    ({"blocks.*.attn.*": (None, None)}, "matches no parameter"),
    ({"*.weight": "model"}, "one mesh axis name or None per dimension"),
    (["*.weight"], "must be a dict"),
])
def test_layout_errors_are_typed(net, layout, match):
    with pytest.raises(LayoutError, match=match) as info:
        unifparam.placements(net, layout, AXES)
    assert isinstance(info.value, ValueError)


def test_keras_on_tensorflow_cannot_shard():
    pytest.importorskip("keras")
    done = subprocess.run([sys.executable, "-c", (
        "import unifparam; from unifparam import nn\n"
        "net = unifparam.build(nn.Sequential(nn.Dense(4)), backend='keras')\n"
        "try:\n"
        "    unifparam.materialize(net, input_shape=(1, 2), mesh=object())\n"
        "except unifparam.UnsupportedError as e:\n"
        "    print('refused:', e)\n")], capture_output=True, text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=300)
    assert "refused: The keras:tensorflow backend cannot shard" in done.stdout, done.stderr[-2000:]


def test_layout_without_mesh_and_wrong_mesh(net):
    with pytest.raises(LayoutError, match="pass mesh= too"):
        unifparam.materialize(net, layout={"*.weight": ("model", None)})
    with pytest.raises(unifparam.UnsupportedError, match="DeviceMesh"):
        unifparam.materialize(net, mesh=object(), layout={"*.weight": ("model", None)})
    assert {p.state for p in unifparam.params(net).values()} == {"abstract"}


def test_bad_layout_changes_nothing_on_a_jax_mesh():
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    net = unifparam.build(nn.Sequential(nn.Dense(8)), backend="flax")
    with pytest.raises(LayoutError, match="has 1 dimensions"):
        unifparam.materialize(net, input_shape=(2, 4), mesh=mesh,
                              layout={"*": ("model",)})
    assert {p.state for p in unifparam.params(net).values()} == {"deferred"}
    unifparam.materialize(net, input_shape=(2, 4), mesh=mesh, layout={"*.weight": ("model", None)})
    assert unifparam.params(net)["0.weight"].native.sharding.mesh == mesh


def _run(args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=HERE.parent.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("backend", ["flax", "flax:nnx", "keras:jax"])
def test_on_a_2x4_jax_mesh(backend):
    pytest.importorskip("flax")
    pytest.importorskip("keras")
    out = _run([str(HERE / "jax_mesh.py"), backend],
               {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "KERAS_BACKEND": "jax"})
    assert out.count("OK bit-identical") == 4 and "OK shared layer" in out
    assert "OK checkpoints" in out


@pytest.mark.parametrize("ranks", [2, 4])
def test_torch_dtensor_ranks(ranks, tmp_path):
    pytest.importorskip("torch")
    out = _run(["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                str(HERE / "torch_ranks.py"), str(tmp_path)])
    assert out.count("OK bit-identical") == 3, out
    assert "OK abstract then sharded default init" in out and "OK checkpoints" in out
    assert "OK sharded forward and gradients" in out
    # the ranks' checkpoint, read by another backend, unsharded
    pytest.importorskip("flax")
    from unifparam import init
    net = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"), nn.Dense(8)),
                          backend="flax")
    unifparam.load_sharded(net, tmp_path)
    ref = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"), nn.Dense(8)),
                          backend="flax")
    unifparam.initialize(ref, init.Normal(std=0.5), seed=3)
    unifparam.materialize(ref, input_shape=(4, 12))
    for name, p in unifparam.params(net).items():
        np.testing.assert_array_equal(p.numpy(), unifparam.params(ref)[name].numpy())
