"""Devices: which exist, placing at materialization, moving, inputs, checkpoints.

Every configuration runs these. Moves need two devices: JAX backends get eight host
devices in a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8``) when this
process has one; MXNet has ``mx.cpu(0)`` and ``mx.cpu(1)``; torch here has one real device
(``cpu``) and ``meta``. Accelerator cases skip without a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs

JAX_BACKENDS = ("flax", "flax:linen", "flax:nnx", "keras:jax")
INNER = "UNIFPARAM_DEVICES_SUBPROCESS"


def spec() -> nn.Sequential:
    return nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(8), nn.Dense(8))


def seeded(build, **kwargs) -> up.Model:
    """Seeded, with layers 1 and 2 tied."""
    net = build(spec(), **kwargs)
    up.initialize(net, init.Normal(std=0.5), seed=3)
    up.tie(net, net[1], net[2])
    return net


def values(net: up.Model) -> dict[str, np.ndarray]:
    return {n: p.numpy().copy() for n, p in up.params(net).items()}


def two_devices(backend: str) -> tuple[str, str] | None:
    """Two distinct devices parameters can live on (the later host devices if eight)."""
    be = up.get_backend(backend)
    names = up.devices(backend)
    if "cpu:5" in names:
        return "cpu:3", "cpu:5"
    if len(names) >= 2:
        return names[0], names[1]
    return ("cpu:0", "cpu:1") if be.placeable("cpu:1") else None


def test_devices_are_listed_by_portable_names(backend):
    names = up.devices(backend)
    assert names[0] == "cpu:0" and len(set(names)) == len(names)
    assert all(re.fullmatch(r"(cpu|gpu|tpu|mps):\d+", n) for n in names), names
    assert up.num_gpus(backend) == sum(n.startswith("gpu:") for n in names)
    assert up.get_backend(backend).default_device() in names


def test_device_names_as_users_type_them(backend):
    from unifparam._devices import name_of, parse
    assert [parse(n) for n in ("cpu", "CPU:0", "gpu", "gpu:1", "cuda:0", "cuda")] == [
        "cpu:0", "cpu:0", "gpu:0", "gpu:1", "gpu:0", "gpu:0"]
    be = up.get_backend(backend)
    assert name_of(be, be.native_device("cpu:0")) == "cpu:0"  # the framework's own object
    net = up.build(spec(), backend=backend)
    with pytest.raises(up.ArgumentValueError, match="'xpu:0' is not a device name"):
        up.materialize(net, input_shape=(2, 4), device="xpu:0")
    with pytest.raises(up.ArgumentError, match="device name such as 'cpu'"):
        up.materialize(net, input_shape=(2, 4), device=3.5)
    assert {p.state for p in up.params(net).values()} == {"deferred"}


def test_placing_on_the_cpu_keeps_seeded_values_and_outputs(build, backend):
    x = inputs(2, 4)
    ref = seeded(build)
    y = ref.to_numpy(ref(x))
    net = seeded(build)
    be = up.get_backend(backend)
    assert up.materialize(net, x, device=be.native_device("cpu:0")) is net
    assert net.device == "cpu:0"
    assert {p.device for p in up.params(net).values()} == {"cpu:0"}
    for name, value in values(ref).items():
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    np.testing.assert_allclose(net.to_numpy(net(x)), y, rtol=1e-6, atol=1e-6)
    assert sorted(up.gradients(net, x)) == sorted(up.gradients(ref, x))


def test_build_on_a_device_then_the_first_call_places_there(backend):
    net = up.build(spec(), backend=backend, device="cpu")
    assert net.device == "cpu:0" and net[0].weight.state == "deferred"
    net(inputs(2, 4))  # numpy input: sent to the model's device
    assert net.device == "cpu:0" and {p.device for p in up.params(net).values()} == {"cpu:0"}
    up.to(net, "cpu")  # already there: nothing changes
    assert net.device == "cpu:0"


def test_a_device_that_does_not_exist_is_typed_and_changes_nothing(build, backend):
    missing = f"gpu:{up.num_gpus(backend)}"  # one past the last GPU (gpu:0 without any)
    net = seeded(build)
    with pytest.raises(up.DeviceError, match=f"Device '{missing}' does not exist") as info:
        up.materialize(net, inputs(2, 4), device=missing)
    assert isinstance(info.value, LookupError) and "cpu:0" in str(info.value)
    assert {p.state for p in up.params(net).values()} == {"deferred"}
    up.materialize(net, inputs(2, 4))
    before, where = values(net), net.device
    with pytest.raises(up.DeviceError, match="Nothing was changed"):
        up.to(net, missing)
    with pytest.raises(up.DeviceError):
        up.materialize(net, device=f"cuda:{up.num_gpus(backend)}")
    assert net.device == where
    for name, value in before.items():
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    with pytest.raises(up.DeviceError):
        up.build(spec(), backend=backend, device=missing)


def test_inputs_from_another_framework_go_to_the_model(build, backend):
    x = inputs(2, 4)
    net = seeded(build)
    y = net.to_numpy(net(x))
    foreign = []
    if not backend.startswith(("torch", "keras:torch")):
        try:
            import torch
            foreign.append(torch.from_numpy(x.copy()))
        except ImportError:
            pass
    if backend not in JAX_BACKENDS and backend != "mxnet":
        try:
            import jax.numpy as jnp
            foreign.append(jnp.asarray(x))
        except ImportError:
            pass
    if not foreign:
        pytest.skip("no other framework installed")
    for arr in foreign:
        np.testing.assert_allclose(net.to_numpy(net(arr)), y, rtol=1e-6, atol=1e-6)
        assert sorted(up.gradients(net, arr)) == ["0.bias", "0.weight", "1.bias", "1.weight"]


def test_moves_between_two_devices_keep_everything(build, backend, tmp_path):
    pair = two_devices(backend)
    if pair is None and backend in JAX_BACKENDS and not os.environ.get(INNER):
        _in_a_subprocess_with_eight_host_devices(backend)
        return
    if pair is None:
        pytest.skip(f"{backend} has one device here ({', '.join(up.devices(backend))})")
    a, b = pair
    x = inputs(2, 4)
    ref = seeded(build)
    y = ref.to_numpy(ref(x))
    grads = up.gradients(ref, x)
    net = seeded(build)
    up.materialize(net, input_shape=(2, 4), abstract=True, device=a)  # remembered ...
    up.materialize(net)                                                 # ... and used
    assert net.device == a and {p.device for p in up.params(net).values()} == {a}
    for name, value in values(ref).items():  # seeded values: the same bits on every device
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    kinds = {n: (p.dtype, p.trainable, p.aliases) for n, p in up.params(net).items()}
    assert up.to(net, b) is net
    assert net.device == b and {p.device for p in up.params(net).values()} == {b}
    assert {n: (p.dtype, p.trainable, p.aliases) for n, p in up.params(net).items()} == kinds
    for name, value in values(ref).items():
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    np.testing.assert_allclose(net.to_numpy(net(x)), y, rtol=1e-6, atol=1e-6)
    for name, g in up.gradients(net, x).items():
        np.testing.assert_allclose(g, grads[name], rtol=1e-5, atol=1e-6)
    net[1].weight[0, 0] = 5.0  # the tie still holds, on the new device
    assert net[2].weight.numpy()[0, 0] == 5.0 and net[1].weight.device == b
    # a checkpoint loads straight onto the model's device
    up.save(net, tmp_path / "moved.safetensors")
    fresh = seeded(build)
    up.materialize(fresh, input_shape=(2, 4), abstract=True, device=a)
    up.load(fresh, tmp_path / "moved.safetensors")
    assert fresh.device == a
    np.testing.assert_array_equal(fresh[2].weight.numpy(), net[2].weight.numpy())
    # materialize(device=) on a materialized model moves it
    up.materialize(fresh, device=b)
    assert fresh.device == b


def _in_a_subprocess_with_eight_host_devices(backend: str) -> None:
    env = {**os.environ, INNER: "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    if backend == "keras:jax":
        env["KERAS_BACKEND"] = "jax"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
         "unifparam.conformance.test_devices", "--unifparam-backend", backend,
         "-k", "moves_between_two_devices"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "1 passed" in done.stdout, \
        done.stdout[-3000:] + done.stderr[-3000:]


def test_an_accelerator_holds_the_same_values(build, backend):
    if up.num_gpus(backend) == 0:
        pytest.skip("no GPU on this machine")
    x = inputs(2, 4)
    ref = seeded(build)
    y = ref.to_numpy(ref(x))
    net = seeded(build)
    up.materialize(net, x, device="gpu")
    assert net.device == "gpu:0"
    for name, value in values(ref).items():
        np.testing.assert_array_equal(up.params(net)[name].numpy(), value)
    # GPUs may multiply float32 in TF32 (JAX's default precision there): loose tolerance
    np.testing.assert_allclose(net.to_numpy(net(x)), y, rtol=1e-2, atol=1e-3)
    up.to(net, "cpu")
    assert net.device == "cpu:0"
    np.testing.assert_allclose(net.to_numpy(net(x)), y, rtol=1e-6, atol=1e-6)
