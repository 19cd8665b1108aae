"""GPU check of devices (issue 25): placement, moves and values on an NVIDIA GPU, and the
time of seeded materialization of a 1B-parameter model onto it against torch's own init.

Run from a source checkout (nothing pip-installed is needed)::

    PYTHONPATH=.:backends python3 benchmarks/gpu_check.py

Sections: torch, flax (linen), flax:nnx, keras:jax; each one whose framework is not
installed, or sees no GPU, prints SKIP. Every check prints one PASS/FAIL/SKIP line; the
summary comes last. Exit status: 1 if any check failed, else 0 (also without a GPU).
``GPU_CHECK_PARAMS`` sets the size of the timed model (default 1e9 parameters); the timed
part scales itself down (and says so) if seeded generation would take over ~2 minutes.

Without a GPU, ``GPU_CHECK_FAKE=cpu:1`` runs every check with that device standing in for
the GPU (JAX with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; torch places
on ``cpu:0`` then): a dry run of the script itself, which tests/test_devices.py does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax and torch share the GPU

import numpy as np  # noqa: E402

RESULTS: list[tuple[str, str]] = []
NOTES: list[str] = []
FAKE = os.environ.get("GPU_CHECK_FAKE", "")  # a host device standing in for the GPU


def report(status: str, name: str, detail: str = "") -> None:
    RESULTS.append((status, name))
    print(f"{status:<4} {name}" + (f" -- {detail}" if detail else ""), flush=True)


def check(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check: PASS if ``fn()`` returns a truthy value (or a detail string)."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - every failure is one FAIL line
        report("FAIL", name, f"{type(e).__name__}: {str(e)[:300]}")
        if os.environ.get("GPU_CHECK_TRACEBACK"):
            traceback.print_exc()
        return None
    if result is False or result is None:
        report("FAIL", name)
    else:
        report("PASS", name, result if isinstance(result, str) else "")
    return result


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ---- setup --------------------------------------------------------------------------------
def shim_array_api_compat() -> None:
    """The torch adapter imports ``array_api_compat.torch`` for custom blocks' ops. This
    check builds no custom block, so without the package a stand-in namespace lets the
    adapter load (``pip install array-api-compat`` for the real one)."""
    if have("array_api_compat"):
        return
    import torch
    pkg = types.ModuleType("array_api_compat")
    pkg.torch = torch  # type: ignore[attr-defined]
    sys.modules["array_api_compat"], sys.modules["array_api_compat.torch"] = pkg, torch
    NOTES.append("array-api-compat is not installed: a stand-in namespace let the torch "
                 "adapter load (no custom block is built here).")


def register_in_tree() -> Any:
    """unifparam, with the in-tree adapters registered when no entry point names them (a
    source checkout on PYTHONPATH): the public hook ``unifparam.register_backend``."""
    import unifparam as up
    for package in ("unifparam_torch", "unifparam_flax", "unifparam_keras"):
        try:
            info = importlib.import_module(package).INFO
        except ImportError:
            continue
        if info.name not in up.backends():
            up.register_backend(info)
    return up


def torch_gpu() -> bool:
    if not have("torch"):
        return False
    import torch
    return torch.cuda.is_available()


def jax_gpu() -> bool:
    if not have("jax"):
        return False
    import jax
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


# ---- placement, moves, values -----------------------------------------------------------
def spec() -> Any:
    from unifparam import nn
    return nn.Sequential(nn.Dense(64, activation="relu"), nn.BatchNorm(), nn.Dense(64),
                         nn.Dense(64), nn.Dense(10))


def make(up: Any, config: str) -> Any:
    from unifparam import init
    net = up.build(spec(), backend=config)
    up.initialize(net, init.Normal(std=0.05), seed=7)
    up.tie(net, net[2], net[3])
    return net


def on_gpu(obj: Any) -> bool:
    """A framework's parameter object or array lives on a GPU."""
    if FAKE:
        return True  # the portable names are checked; native objects are on the host
    value = obj
    for attr in ("get_value", "value"):  # nnx Variable, keras Variable
        inner = getattr(value, attr, None)
        if inner is not None and not hasattr(value, "devices"):
            value = inner() if callable(inner) else inner
    if hasattr(value, "is_cuda"):
        return bool(value.is_cuda)
    if hasattr(value, "devices"):
        return all(d.platform == "gpu" for d in value.devices())
    return False


def foreign_input(config: str, x: np.ndarray) -> Any:
    """``x`` as another framework's array on the GPU (torch for JAX backends, jax for
    torch), or None."""
    if FAKE and config == "torch" and have("jax"):
        import jax.numpy as jnp
        return jnp.asarray(x)
    if FAKE and config != "torch" and have("torch"):
        import torch
        return torch.from_numpy(x)
    if config == "torch" and jax_gpu():
        import jax
        return jax.device_put(x, jax.devices("gpu")[0])
    if config != "torch" and torch_gpu():
        import torch
        return torch.from_numpy(x).cuda()
    return None


def targets(up: Any, config: str) -> tuple[str, str, str]:
    """(portable name, how a user types it, another spelling) of the device checked."""
    if not FAKE:
        return "gpu:0", "gpu", "cuda:0"
    name = FAKE if up.get_backend(config).placeable(FAKE) else "cpu:0"
    return name, name, name.upper()


def check_backend(up: Any, config: str) -> None:
    tag = f"[{config}]"
    gpus = up.num_gpus(config)
    gpu, typed, other_spelling = targets(up, config)
    if FAKE:
        report("SKIP", f"{tag} dry run", f"{gpu} stands in for the GPU")
    elif gpus == 0:
        report("SKIP", f"{tag} placement", f"no GPU visible to {config} "
               f"(devices: {', '.join(up.devices(config))})")
        return
    report("PASS", f"{tag} devices listed", ", ".join(up.devices(config)))
    x = np.random.default_rng(0).random((16, 32), dtype=np.float32)
    ref = make(up, config)
    up.materialize(ref, x, device="cpu")
    y_cpu = ref.to_numpy(ref(x))
    g_cpu = up.gradients(ref, x)
    values = {n: p.numpy().copy() for n, p in up.params(ref).items()}

    net = make(up, config)
    check(f"{tag} materialize(device={typed!r}) places every parameter on {gpu}", lambda: (
        up.materialize(net, x, device=typed) is net and net.device == gpu
        and {p.device for p in up.params(net).values()} == {gpu}))
    check(f"{tag} the framework's own arrays are on the GPU",
          lambda: all(on_gpu(p.native) for p in up.params(net).values()))
    check(f"{tag} seeded values are the same bits as on the CPU", lambda: all(
        np.array_equal(up.params(net)[n].numpy(), v) for n, v in values.items()))

    def output() -> str:
        y = net(x)
        assert on_gpu(y), f"output of type {type(y).__name__} is not on the GPU"
        err = float(np.max(np.abs(net.to_numpy(y) - y_cpu)))
        assert err < 1e-2, f"max |gpu - cpu| = {err:.2e}"
        return f"numpy input; output on the GPU; max |gpu - cpu| = {err:.1e}"
    check(f"{tag} net(numpy X) runs on the GPU", output)

    other = foreign_input(config, x)
    if other is None:
        report("SKIP", f"{tag} another framework's GPU array as input", "none installed")
    else:
        check(f"{tag} another framework's GPU array as input ({type(other).__module__})",
              lambda: float(np.max(np.abs(net.to_numpy(net(other)) - y_cpu))) < 1e-2)

    def grads() -> str:
        g = up.gradients(net, x)
        err = max(float(np.max(np.abs(g[n] - g_cpu[n]))) for n in g_cpu)
        assert sorted(g) == sorted(g_cpu) and err < 1e-2, f"max error {err:.2e}"
        return f"max |gpu - cpu| = {err:.1e}"
    check(f"{tag} gradients on the GPU match the CPU's", grads)

    kinds = {n: (p.dtype, p.trainable, p.aliases) for n, p in up.params(net).items()}
    check(f"{tag} to(net, 'cpu') moves everything, values kept", lambda: (
        up.to(net, "cpu") is net and net.device == "cpu:0"
        and all(np.array_equal(up.params(net)[n].numpy(), v) for n, v in values.items())))
    check(f"{tag} to(net, {other_spelling!r}) moves back; names, ties, trainable, dtypes kept",
          lambda: (up.to(net, other_spelling) is net and net.device == gpu
        and {n: (p.dtype, p.trainable, p.aliases) for n, p in up.params(net).items()} == kinds
        and all(on_gpu(p.native) for p in up.params(net).values())))

    def tie_holds() -> bool:
        net[2].weight[0, 0] = 3.0
        return net[3].weight.numpy()[0, 0] == 3.0 and net[3].weight.device == gpu
    check(f"{tag} a write through one tied use is seen by the other, on the GPU", tie_holds)

    def checkpoint() -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "net.safetensors")
            up.save(net, path)
            fresh = make(up, config)
            up.materialize(fresh, input_shape=(16, 32), abstract=True, device=typed)
            up.load(fresh, path)
            return fresh.device == gpu and all(
                np.array_equal(up.params(fresh)[n].numpy(), p.numpy())
                for n, p in up.params(net).items())
    check(f"{tag} a checkpoint loads straight onto the GPU", checkpoint)

    def missing() -> str:
        name = f"gpu:{gpus}"
        try:
            up.to(net, name)
        except up.DeviceError as e:
            assert net.device == gpu
            return str(e)[:90] + "..."
        raise AssertionError(f"to(net, {name!r}) did not raise")
    check(f"{tag} a GPU that does not exist is a DeviceError that changes nothing", missing)


# ---- timing -----------------------------------------------------------------------------
@contextlib.contextmanager
def timed(out: list[float], sync: Callable[[], None]) -> Iterator[None]:
    sync()
    start = time.perf_counter()
    yield
    sync()
    out.append(time.perf_counter() - start)


def bf16_supported() -> bool:
    """Whether this unifparam builds bfloat16 layers (``nn.Dense(..., dtype=)``)."""
    from unifparam import nn
    try:
        nn.Dense(4, dtype="bfloat16")
    except TypeError:
        return False
    except Exception:  # noqa: BLE001 - a dtype the spec refuses
        return False
    return True


def time_materialization(up: Any) -> None:
    import torch

    from unifparam import init, nn
    if not torch.cuda.is_available() and not FAKE:
        report("SKIP", "[timing] 1B-parameter materialization", "torch sees no GPU")
        return
    where = "cpu" if FAKE else "gpu"
    bf16 = bf16_supported()
    dtype_name = "bfloat16" if bf16 else "float32"
    if not bf16:
        NOTES.append("timing uses float32: this unifparam has no bfloat16 layers yet "
                     "(nn.Dense(..., dtype='bfloat16') is refused).")
    tdtype = getattr(torch, dtype_name)
    width = 8192
    target = float(os.environ.get("GPU_CHECK_PARAMS", 1e9))
    layers = max(1, round(target / (width * width + width)))
    sync = torch.cuda.synchronize if not FAKE else (lambda: None)

    def dense() -> Any:
        return nn.Dense(width, in_features=width, dtype=dtype_name) if bf16 else \
            nn.Dense(width, in_features=width)

    def seeded(n: int) -> Any:
        net = up.build(nn.Sequential(*(dense() for _ in range(n))), backend="torch")
        up.initialize(net, init.Normal(std=0.02), seed=0)
        return net

    # one layer first, to size the timed model to the budget
    probe: list[float] = []
    with timed(probe, sync):
        up.materialize(seeded(1), input_shape=(1, width), device=where)
    budget = 120.0
    if probe[0] * layers > budget:
        scaled = max(1, int(budget / probe[0]))
        NOTES.append(f"seeded generation takes {probe[0]:.2f} s per {width}x{width} layer "
                     f"here: the timed model has {scaled} layers instead of {layers}.")
        layers = scaled
    torch.cuda.empty_cache()
    count = layers * (width * width + width)
    times: dict[str, list[float]] = {k: [] for k in ("torch", "default", "seeded")}

    with timed(times["torch"], sync):  # torch's own init (kaiming_uniform_) on the device
        model = torch.nn.Sequential(*(torch.nn.Linear(width, width, device=where.replace(
            "gpu", "cuda"),
                                                      dtype=tdtype) for _ in range(layers)))
    del model
    torch.cuda.empty_cache()
    with timed(times["default"], sync):  # unifparam, the framework's default on the device
        net = up.build(nn.Sequential(*(dense() for _ in range(layers))), backend="torch")
        up.materialize(net, input_shape=(1, width), device=where)
    ok_default = net.device == f"{where}:0"
    del net
    torch.cuda.empty_cache()
    with timed(times["seeded"], sync):  # unifparam, seeded: host generation + copy
        net = seeded(layers)
        up.materialize(net, input_shape=(1, width), device=where)
    ok_seeded = net.device == f"{where}:0"
    sample = net[0].weight[:2, :4]
    del net
    torch.cuda.empty_cache()
    again = seeded(1)
    up.materialize(again, input_shape=(1, width), device="cpu")
    same = np.array_equal(again[0].weight[:2, :4], sample)

    nbytes = count * (2 if bf16 else 4)
    print(f"\n  {count / 1e9:.2f}B parameters ({layers} x Dense({width})), {dtype_name}, "
          f"{nbytes / 2**30:.1f} GiB, on "
          f"{torch.cuda.get_device_name(0) if not FAKE else 'the CPU (dry run)'}")
    for key, label in (("torch", "torch.nn.Linear(device='cuda'): torch.nn.init on the GPU"),
                       ("default", "unifparam, framework default on the GPU (no seed)"),
                       ("seeded", "unifparam, seeded values (host) copied to the GPU")):
        t = times[key][0]
        print(f"  {label:<58} {t:8.2f} s  {nbytes / t / 2**30:7.2f} GiB/s  "
              f"x{t / times['torch'][0]:.1f}")
    print()
    report("PASS" if ok_default and ok_seeded else "FAIL",
           "[timing] 1B-parameter materialization placed on gpu:0",
           f"seeded {times['seeded'][0]:.1f} s vs torch.nn.init {times['torch'][0]:.2f} s")
    report("PASS" if same else "FAIL", "[timing] seeded GPU values equal the CPU's (sample)")


# ---- main ---------------------------------------------------------------------------------
def main() -> int:
    start = time.perf_counter()
    torch_ok, jax_ok = torch_gpu() or bool(FAKE), jax_gpu() or bool(FAKE)
    if not torch_ok and not jax_ok:
        why = "neither torch nor jax is installed" if not have("torch") and not have("jax") \
            else "no NVIDIA GPU is visible to torch or jax"
        print(f"SKIP gpu_check: {why}; nothing to check on this machine.")
        return 0
    if have("torch"):
        shim_array_api_compat()
    up = register_in_tree()
    print(f"unifparam {up.__version__} from {os.path.dirname(up.__file__)}; backends: "
          f"{', '.join(up.backends())}")
    sections = [("torch", ("torch",), torch_ok), ("flax", ("jax", "flax"), jax_ok),
                ("flax:nnx", ("jax", "flax"), jax_ok), ("keras:jax", ("jax", "keras"), jax_ok)]
    for config, needs, gpu in sections:
        missing = [m for m in needs if not have(m)]
        if missing:
            report("SKIP", f"[{config}]", f"{', '.join(missing)} not installed")
        elif config == "keras:jax" and os.environ.get("KERAS_BACKEND") != "jax":
            report("SKIP", f"[{config}]", f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}")
        elif not gpu:
            report("SKIP", f"[{config}]", "its framework sees no GPU")
        else:
            check(f"[{config}] section ran", lambda c=config: check_backend(up, c) or True)
    if have("torch") and torch_ok:
        check("[timing] section ran", lambda: time_materialization(up) or True)
    else:
        report("SKIP", "[timing]", "torch with CUDA is not installed")
    counts = {s: sum(1 for r, _ in RESULTS if r == s) for s in ("PASS", "FAIL", "SKIP")}
    for note in NOTES:
        print(f"NOTE {note}")
    print(f"\nSUMMARY: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} "
          f"skipped in {time.perf_counter() - start:.0f} s")
    for status, name in RESULTS:
        if status == "FAIL":
            print(f"  FAILED: {name}")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
