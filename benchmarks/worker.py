"""One benchmark process: measure cases for one backend configuration, print one JSON line.

    python -m benchmarks.worker --backend keras:jax --case up-uniform --size 400m
    python -m benchmarks.worker --backend torch --case up-default,native-default \\
        --size mlp,rgnet --repeat 3 --warmup 1

The line is ``{"records": [...]}``, one record per (case, size) with the wall seconds and
the peak extra RSS bytes of every timed run. Peak RSS is measured here: the high-water mark
is reset (``5`` to ``/proc/self/clear_refs``), VmRSS read before, VmHWM after. Only the
standard library is imported at module level, so the ``import`` case times a cold
``import unifparam``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

Thunk = Callable[[], Any]

UP_CASES = ("up-default", "up-uniform", "up-normal")
NATIVE_CASES = ("native-default", "native-lazy", "native-uniform", "native-normal",
                "native-normal-jit")
NUMPY_CASES = ("numpy-uniform-philox", "numpy-uniform-pcg64", "numpy-normal-philox",
               "numpy-normal-pcg64")
ABSTRACT_CASES = ("up-abstract", "native-abstract")
PARAMS_CASES = ("up-params", "native-params")
CKPT_CASES = ("up-ckpt", "native-ckpt")
CASES = UP_CASES + NATIVE_CASES + NUMPY_CASES + ABSTRACT_CASES + PARAMS_CASES + CKPT_CASES \
    + ("import",)
ABSTRACT_LIMIT = 1_000_000_000  # bytes an abstract case may allocate before it is aborted
FRAMEWORKS = ("torch", "tensorflow", "jax", "keras", "flax")


class NotAvailable(Exception):
    """This case has no meaning or no implementation on this configuration."""


def valid(case: str, size: str, abstract_only: bool) -> bool:
    """Whether ``case`` is measured on model ``size`` (abstract-only models never allocate)."""
    if case == "import":
        return True
    if case in PARAMS_CASES:
        return size == "params4k"
    if case in ABSTRACT_CASES:
        return size != "params4k"
    return size != "params4k" and not abstract_only


# ---- memory -------------------------------------------------------------------------------
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(thunk: Thunk, sync: Callable[[Any], None], repeat: int, warmup: int
            ) -> tuple[list[float], list[int | None]]:
    """Wall seconds and peak extra RSS bytes of ``repeat`` timed runs after ``warmup``."""
    seconds: list[float] = []
    rss: list[int | None] = []
    for i in range(warmup + repeat):
        gc.collect()
        ok = _reset_peak()
        base = _status("VmRSS")
        t0 = time.perf_counter()
        obj = thunk()
        sync(obj)
        dt = time.perf_counter() - t0
        peak = _status("VmHWM") - base if ok else None
        obj = None  # noqa: F841 - drop before the next run
        if i >= warmup:
            seconds.append(dt)
            rss.append(peak)
    return seconds, rss


class MemoryGuard:
    """Abort the process (printing what was measured) if RSS grows past ``limit`` bytes:
    abstract cases must never allocate a 7B or 70B model on a shared machine."""

    def __init__(self, limit: int, done: list[dict], current: dict):
        self.limit, self.done, self.current = limit, done, current
        self.base = _status("VmRSS")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stop.wait(0.05):
            if _status("VmRSS") - self.base > self.limit:
                err = {**self.current, "seconds": [], "rss": [],
                       "error": f"aborted: allocated more than {self.limit / 1e9:.1f} GB"}
                print(json.dumps({"records": self.done + [err]}), flush=True)
                os._exit(3)

    def __enter__(self) -> MemoryGuard:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# ---- sync ---------------------------------------------------------------------------------
def make_sync(config: str) -> Callable[[Any], None]:
    """Wait for asynchronous jax work (keras:jax, flax); a no-op elsewhere."""
    if config not in ("flax", "keras:jax"):
        return lambda obj: None

    def sync(obj: Any) -> None:
        import jax
        if hasattr(obj, "_st") and hasattr(obj, "native"):  # a unifparam Model
            obj = obj.native
        if hasattr(obj, "weights"):  # a Keras layer or model
            # an abstract variable's .value would run its initializer: skip those
            obj = [w.value for w in obj.weights if w._value is not None]
        jax.block_until_ready(obj)
    return sync


# ---- unifparam side -----------------------------------------------------------------------
def _up(config: str) -> Any:
    import unifparam
    try:
        unifparam.get_backend(config)  # loads the adapter and its framework, untimed
    except Exception as e:  # noqa: BLE001 - any failure means the backend is not usable
        raise NotAvailable(f"backend not available: {type(e).__name__}: {e}") from e
    # the modules the verbs load on first use, untimed too (the import row times importing;
    # this environment keeps no bytecode cache, so a first use compiles them from source)
    import importlib
    for name in ("_plan", "_verbs", "checkpoint", "init", "nn"):
        importlib.import_module(f"unifparam.{name}")
    return unifparam


def up_jobs(config: str, case: str, m: Any, tmp: str) -> list[tuple[str, Thunk]]:
    """Thunks for the unifparam side of ``case``."""
    import math

    from . import models
    up = _up(config)
    init = up.init
    inits = {"up-default": None, "up-uniform": init.KaimingUniform(a=math.sqrt(5)),
             "up-normal": init.Normal(std=0.01)}
    if case in inits:
        chosen = inits[case]

        def materialize() -> Any:
            net = up.build(models.spec(m), backend=config)
            if chosen is not None:
                up.initialize(net, chosen, seed=0)
            return up.materialize(net, input_shape=m.input_shape)
        return [(case, materialize)]
    if case == "up-abstract":
        return [(case, lambda: up.materialize(up.build(models.spec(m), backend=config),
                                              input_shape=m.input_shape, abstract=True))]
    if case == "up-params":
        net = up.materialize(up.build(models.spec(m), backend=config), input_shape=m.input_shape)
        return [(case, lambda: list(up.params(net).items()))]
    if case == "up-ckpt":
        if not (hasattr(up, "save") and hasattr(up, "load")):
            raise NotAvailable("unifparam.save/load do not exist yet")
        net = up.build(models.spec(m), backend=config)
        up.initialize(net, init.Normal(std=0.01), seed=0)
        up.materialize(net, input_shape=m.input_shape)
        path = os.path.join(tmp, "up.safetensors")

        def load() -> Any:
            fresh = up.build(models.spec(m), backend=config)
            up.load(fresh, path)
            return fresh
        return [("up-save", lambda: up.save(net, path)), ("up-load", load)]
    raise NotAvailable(f"unknown unifparam case {case!r}")


# ---- native side --------------------------------------------------------------------------
def torch_jobs(case: str, m: Any, tmp: str) -> list[tuple[str, Thunk]]:
    import torch

    from . import models
    torch.manual_seed(0)

    def lazy() -> Any:
        mod = models.torch_model(m, lazy=True)
        with torch.no_grad():
            mod(torch.zeros(m.input_shape))
        return mod

    def normal() -> Any:
        with torch.device("meta"):
            mod = models.torch_model(m)
        mod.to_empty(device="cpu")
        with torch.no_grad():
            for sub in mod.modules():
                if isinstance(sub, torch.nn.Linear):
                    sub.weight.normal_(0.0, 0.01)
                    sub.bias.zero_()
        return mod

    def meta() -> Any:
        with torch.device("meta"):
            return models.torch_model(m)

    simple = {"native-default": lambda: models.torch_model(m), "native-lazy": lazy,
              "native-uniform": lambda: models.torch_model(m), "native-normal": normal,
              "native-abstract": meta}
    if case in simple:
        return [(case, simple[case])]
    if case == "native-params":
        mod = models.torch_model(m)
        return [(case, lambda: list(mod.named_parameters()))]
    if case == "native-ckpt":  # load = load_file + load_state_dict (load_file alone mmaps)
        from safetensors.torch import load_file, save_file
        mod = models.torch_model(m)
        path = os.path.join(tmp, "native.safetensors")
        return [("native-save", lambda: save_file(mod.state_dict(), path)),
                ("native-load", lambda: mod.load_state_dict(load_file(path)))]
    raise NotAvailable(f"{case} has no torch equivalent here")


def keras_jobs(case: str, m: Any) -> list[tuple[str, Thunk]]:
    import keras

    from . import models
    if case in ("native-default", "native-uniform"):  # Keras's default is glorot uniform
        return [(case, lambda: models.keras_model(m))]
    if case == "native-normal":
        return [(case, lambda: models.keras_model(
            m, keras.initializers.RandomNormal(stddev=0.01)))]
    if case == "native-params":
        model = models.keras_model(m)
        return [(case, lambda: [(w.path, w) for w in model.weights])]
    if case == "native-abstract":
        raise NotAvailable("Keras has no public abstract materialization")
    raise NotAvailable(f"{case} has no Keras equivalent here")


def flax_jobs(case: str, m: Any) -> list[tuple[str, Thunk]]:
    import flax.linen as fnn
    from flax import traverse_util

    from . import models
    uniform = fnn.initializers.xavier_uniform()
    simple = {
        "native-default": lambda: models.flax_init(m, models.flax_module(m)),
        "native-normal": lambda: models.flax_init(m, models.flax_module(m)),  # LeCun normal
        "native-uniform": lambda: models.flax_init(m, models.flax_module(m, uniform)),
        "native-normal-jit": lambda: models.flax_init(m, models.flax_module(m), jit=True),
        "native-abstract": lambda: models.flax_abstract(m, models.flax_module(m)),
    }
    if case in simple:
        return [(case, simple[case])]
    if case == "native-params":
        variables = models.flax_init(m, models.flax_module(m))
        return [(case, lambda: traverse_util.flatten_dict(variables))]
    raise NotAvailable(f"{case} has no Flax equivalent here")


def numpy_jobs(case: str, m: Any) -> list[tuple[str, Thunk]]:
    """numpy's own speed: the same number of float32 values into one preallocated buffer,
    two threads (both cores), each filling its half with its own generator."""
    import numpy as np
    _, family, bits = case.split("-")
    buf = np.empty(m.params, np.float32)  # allocated, not touched: first touch is timed
    bitgen = {"philox": np.random.Philox, "pcg64": np.random.PCG64}[bits]
    draw = "random" if family == "uniform" else "standard_normal"
    return [(case, lambda: fill_on_two_cores(buf, bitgen, draw))]


def fill_on_two_cores(buf: Any, bitgen: Any, draw: str = "random") -> Any:
    """numpy's bound: ``buf`` filled by two threads, one generator ``bitgen(i)`` per half."""
    import numpy as np
    gens = [np.random.Generator(bitgen(i)) for i in range(2)]
    threads = [threading.Thread(target=getattr(g, draw), kwargs={"dtype": np.float32, "out": h})
               for g, h in zip(gens, np.array_split(buf, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return buf


def native_jobs(config: str, case: str, m: Any, tmp: str) -> list[tuple[str, Thunk]]:
    if config == "numpy":
        return numpy_jobs(case, m)
    if config == "torch":
        return torch_jobs(case, m, tmp)
    if config.startswith("keras"):
        return keras_jobs(case, m)
    if config == "flax":
        return flax_jobs(case, m)
    raise NotAvailable(f"no native code for {config!r}")


# ---- driver -------------------------------------------------------------------------------
def time_import() -> dict:
    """``import unifparam`` in this (fresh) process, and which frameworks it pulled in."""
    before = set(sys.modules)
    t0 = time.perf_counter()
    import unifparam  # noqa: F401
    dt = time.perf_counter() - t0
    loaded = sorted(f for f in FRAMEWORKS if f in sys.modules and f not in before)
    return {"case": "import", "model": "-", "params": 0, "bytes": 0, "seconds": [dt],
            "rss": [None], "error": None, "frameworks": loaded}


def run_case(config: str, case: str, size: str, repeat: int, warmup: int, tmp: str
             ) -> list[dict]:
    """Records for one (case, size); a record with ``error`` if it cannot be measured."""
    from .models import MODELS
    m = MODELS[size]
    base = {"model": size, "params": m.params, "bytes": m.nbytes, "error": None}
    try:
        side = up_jobs if case.startswith("up-") else native_jobs
        jobs = side(config, case, m, tmp)
    except NotAvailable as e:
        return [{**base, "case": case, "seconds": [], "rss": [], "error": f"n/a ({e})"}]
    sync = make_sync(config)
    out = []
    for name, thunk in jobs:
        try:
            seconds, rss = measure(thunk, sync, repeat, warmup)
            out.append({**base, "case": name, "seconds": seconds, "rss": rss})
        except Exception as e:  # noqa: BLE001 - report, keep measuring the other cases
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            out.append({**base, "case": name, "seconds": [], "rss": [], "error": msg})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True, help="torch, keras:jax, flax, numpy, none")
    p.add_argument("--case", required=True, help="comma-separated: " + ", ".join(CASES))
    p.add_argument("--size", default="mlp", help="comma-separated model names (models.MODELS)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    args = p.parse_args(argv)
    cases = args.case.split(",")
    if cases == ["import"]:
        print(json.dumps({"records": [{**time_import(), "config": args.backend}]}))
        return 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # Keras: 2,000-layer graphs
    if args.backend.startswith("keras:"):
        os.environ["KERAS_BACKEND"] = args.backend.split(":", 1)[1]
    from .models import MODELS
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="unifparam-bench-") as tmp:
        for size in args.size.split(","):
            for case in cases:
                if not valid(case, size, MODELS[size].abstract_only):
                    continue
                if case in ABSTRACT_CASES:
                    current = {"config": args.backend, "case": case, "model": size,
                               "params": MODELS[size].params, "bytes": MODELS[size].nbytes}
                    with MemoryGuard(ABSTRACT_LIMIT, records, current):
                        records += run_case(args.backend, case, size, args.repeat, args.warmup,
                                            tmp)
                else:
                    records += run_case(args.backend, case, size, args.repeat, args.warmup, tmp)
    for r in records:
        r["config"] = args.backend
    print(json.dumps({"records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
