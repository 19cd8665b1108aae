"""Devices beyond the conformance group: torch's meta device, register_backend, the core's
parsing, and MXNet's contexts from the main venv's side (its own venv runs the group)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn
from unifparam._devices import parse


@pytest.mark.parametrize("typed, portable", [
    ("cpu", "cpu:0"), (" GPU : 2 ", "gpu:2"), ("cuda", "gpu:0"), ("cuda:1", "gpu:1"),
    ("meta", "meta"), ("tpu:3", "tpu:3"), ("rocm:0", "gpu:0")])
def test_names_users_type(typed, portable):
    assert parse(typed) == portable


@pytest.mark.parametrize("bad", ["", "gpu:-1", "gpu:a", "quantum", "cpu:0:1"])
def test_unreadable_names_are_typed(bad):
    with pytest.raises(up.ArgumentValueError, match="is not a device name"):
        parse(bad)


def _torch_net():
    net = up.build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(8), nn.Dense(8)),
                   backend="torch")
    up.initialize(net, init.Normal(std=0.5), seed=3)
    up.tie(net, net[1], net[2])
    return net


def test_torch_meta_drops_values_and_materialize_refills_them_seeded():
    torch = pytest.importorskip("torch")
    net = _torch_net()
    x = np.ones((2, 4), np.float32)
    y = net.to_numpy(net(x))
    before = {n: p.numpy().copy() for n, p in up.params(net).items()}
    up.to(net, torch.device("meta"))
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    assert net.native[1].weight is net.native[2].weight  # the tie is one tensor, on meta too
    assert net.native[1].weight.is_meta and net.device == "cpu:0"  # where it will go
    up.materialize(net)
    for name, value in before.items():
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    np.testing.assert_allclose(net.to_numpy(net(x)), y, rtol=1e-6)
    assert net.native[1].weight is net.native[2].weight


def test_torch_materialize_on_meta_is_abstract():
    pytest.importorskip("torch")
    net = _torch_net()
    up.materialize(net, input_shape=(2, 4), device="meta")
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    up.materialize(net, device="cpu")
    assert net.device == "cpu:0" and net[0].weight.state == "materialized"


def test_torch_move_keeps_parameter_objects_and_flags():
    torch = pytest.importorskip("torch")
    native = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    native[0].bias.requires_grad_(False)
    weight = native[0].weight
    net = up.build(native, device=torch.device("cpu"))
    assert net.device == "cpu:0" and net.native[0].weight is weight
    assert not up.params(net)["0.bias"].trainable
    assert up.params(net)["1.running_mean"].device == "cpu:0"


def test_register_backend_without_entry_points():
    """A source checkout (PYTHONPATH=.:backends, nothing pip-installed) registers the
    in-tree adapters through the public hook."""
    pytest.importorskip("torch")
    code = (
        "import importlib.metadata as md\n"
        "md.entry_points = lambda **kw: []\n"  # as if unifparam were not installed
        "import unifparam as up\n"
        "try:\n"
        "    up.get_backend('torch')\n"
        "except up.BackendNotFoundError:\n"
        "    print('not found')\n"
        "import unifparam_torch\n"
        "up.register_backend(unifparam_torch.INFO)\n"
        "print(up.devices('torch'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert done.stdout.split("\n")[:2] == ["not found", "['cpu:0']"], done.stderr[-2000:]
    with pytest.raises(up.ArgumentError, match="BackendInfo"):
        up.register_backend("torch")


def test_jax_device_objects_and_committed_inputs():
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    net = up.build(nn.Sequential(nn.Dense(3)), backend="flax")
    up.materialize(net, input_shape=(2, 4), device=jax.devices("cpu")[0])
    assert net.device == "cpu:0" and net[0].weight.native.committed
    x = jax.device_put(np.ones((2, 4), np.float32), jax.devices("cpu")[0])
    assert net(x).shape == (2, 3)


def _gpu_check(env):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "gpu_check.py")],
                          capture_output=True, text=True, timeout=600, cwd=root,
                          env={**os.environ, "PYTHONPATH": f"{root}:{root}/backends", **env})
    return done.returncode, done.stdout + done.stderr[-3000:]


def test_gpu_check_skips_cleanly_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script checks it instead")
    code, out = _gpu_check({"GPU_CHECK_FAKE": ""})
    assert code == 0 and "SKIP gpu_check: no NVIDIA GPU" in out, out


def test_gpu_check_dry_run_on_host_devices():
    """Every check of the GPU script, with host device cpu:1 standing in for the GPU."""
    pytest.importorskip("torch")
    pytest.importorskip("flax")
    code, out = _gpu_check({"GPU_CHECK_FAKE": "cpu:1", "GPU_CHECK_PARAMS": "6.8e7",
                            "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert code == 0 and "FAIL" not in out, out
    assert out.count("PASS [flax:nnx]") >= 10 and "PASS [timing] seeded GPU values" in out


def test_torch_materialize_on_meta_drops_values_of_a_materialized_model():
    pytest.importorskip("torch")
    net = _torch_net()
    up.materialize(net, input_shape=(2, 4))
    up.materialize(net, device="meta")
    assert {p.state for p in up.params(net).values()} == {"abstract"}


def test_build_device_of_a_handle_uses_its_backend():
    pytest.importorskip("torch")
    net = _torch_net()
    up.materialize(net, input_shape=(2, 4))
    assert up.build(net, device="cpu") is net and net.device == "cpu:0"
