"""Issue 16's table in one run: every row with its target and met/missed.

    python -m benchmarks --report --sizes 400m --repeat 3 --json report.json
    python -m benchmarks.report --size mlp --repeat 3          # a quick dry run

Every measurement runs in its own fresh process (``--repeat`` processes per case), so each
row is a median over fresh processes, shown with its spread (min-max). Each row names the
memory state it measures: *fresh pages* (the step allocates and first-touches its memory,
as a real materialization does) or *reused pages* (memory already mapped and touched).
First touch and generation are measured separately for numpy's PCG64 bound, so the ratio
to it compares the same memory state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

GB = 1e9
TIMEOUT = 900.0
GPT2_XL = {"d": 1600, "layers": 48, "vocab": 50257, "positions": 1024}  # 1,557,611,200 params


# ---- worker side: the cases not in benchmarks.worker ---------------------------------------
def _timed(fn: Any) -> tuple[float, int | None, Any]:
    """(wall seconds, peak extra RSS bytes, result) of one call."""
    import gc

    from .worker import _reset_peak, _status
    gc.collect()
    ok = _reset_peak()
    base = _status("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return dt, (_status("VmHWM") - base if ok else None), out


def numpy_split(nparams: int) -> dict[str, dict]:
    """numpy PCG64 on both cores, first touch and generation timed apart.

    ``populate``: fresh pages mapped and populated the way unifparam maps its buffers
    (``aligned_empty``: MAP_POPULATE); ``generate``: two threads, each its own PCG64 filling
    its half of the already-populated buffer (reused pages); ``fresh``: the two in a row.
    """

    import numpy as np

    from unifparam._buffers import aligned_empty

    from .worker import fill_on_two_cores

    def generate(buf: Any) -> Any:
        return fill_on_two_cores(buf, np.random.PCG64)

    pop_s, pop_rss, buf = _timed(lambda: aligned_empty(nparams, np.float32))
    gen_s, _, _ = _timed(lambda: generate(buf))
    del buf
    fresh_s, fresh_rss, buf = _timed(lambda: generate(aligned_empty(nparams, np.float32)))
    return {"numpy-populate": {"seconds": pop_s, "rss": pop_rss},
            "numpy-generate": {"seconds": gen_s, "rss": None},
            "numpy-fresh": {"seconds": fresh_s, "rss": fresh_rss}}


def memcpy_bound(nbytes: int, tmp: str) -> dict[str, dict]:
    """memcpy bandwidth from a checkpoint-sized file in the page cache: into fresh pages
    (populated as unifparam populates) and into reused pages."""
    import numpy as np

    from unifparam._buffers import aligned_empty
    path = os.path.join(tmp, "memcpy.bin")
    n = nbytes // 4
    np.ones(n, np.float32).tofile(path)
    src = np.memmap(path, np.float32, "r")
    np.copyto(aligned_empty(n, np.float32), src)  # file pages into the cache and mapping

    def fresh() -> Any:
        dst = aligned_empty(n, np.float32)
        np.copyto(dst, src)
        return dst
    f_s, f_rss, dst = _timed(fresh)
    r_s, _, _ = _timed(lambda: np.copyto(dst, src))
    return {"memcpy-fresh": {"seconds": f_s, "rss": f_rss},
            "memcpy-reused": {"seconds": r_s, "rss": None}}


def gpt2_model(scale: dict | None = None) -> Any:
    """A torch module with GPT-2 XL's parameter names' structure and shapes (transformers'
    Conv1D kernels are (in, out); Linear's (out, in) has the same bytes), built on meta."""
    import torch
    import torch.nn as tnn
    c = {**GPT2_XL, **(scale or {})}
    d = c["d"]

    class Attn(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn, self.c_proj = tnn.Linear(d, 3 * d), tnn.Linear(d, d)

    class MLP(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_fc, self.c_proj = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

    class Block(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1, self.attn = tnn.LayerNorm(d), Attn()
            self.ln_2, self.mlp = tnn.LayerNorm(d), MLP()

    class GPT2(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(c["vocab"], d), tnn.Embedding(c["positions"], d)
            self.h = tnn.ModuleList(Block() for _ in range(c["layers"]))
            self.ln_f = tnn.LayerNorm(d)

    with torch.device("meta"):
        return GPT2()


def gpt2_adopt(size: str) -> dict[str, dict]:
    """Adopt the GPT-2 XL-shaped model from meta, seeded XavierUniform, materialize."""
    import unifparam as up
    scale = None if size == "400m" else {"layers": 2, "vocab": 1000, "d": 64}
    try:
        import transformers  # noqa: F401
        from transformers import GPT2Config, GPT2LMHeadModel
        note = "transformers GPT2LMHeadModel (gpt2-xl config) on meta"

        def make() -> Any:
            import torch
            cfg = GPT2Config(n_embd=1600, n_layer=48, n_head=25) if scale is None else \
                GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=1000)
            with torch.device("meta"):
                return GPT2LMHeadModel(cfg)
    except ImportError:
        note = "torch module of GPT-2 XL's parameter shapes (transformers not installed)"

        def make() -> Any:
            return gpt2_model(scale)
    from .worker import _up
    _up("torch")  # the adapter and the verbs' modules loaded untimed, as in every up- case
    mod = make()
    nparams = sum(p.numel() for p in mod.parameters())

    def run() -> Any:
        net = up.build(mod)
        up.initialize(net, up.init.XavierUniform(), seed=0)
        return up.materialize(net)
    s, rss, _ = _timed(run)
    return {"gpt2-adopt": {"seconds": s, "rss": rss, "params": nparams, "note": note}}


def worker(config: str, case: str, size: str) -> dict[str, dict]:
    """One case in this fresh process: {case name: {seconds, rss, ...}}."""
    from .models import MODELS
    m = MODELS[size]
    if case == "numpy-split":
        return numpy_split(m.params)
    if case == "gpt2-adopt":
        return gpt2_adopt(size)
    if case == "import":
        from .worker import time_import
        r = time_import()
        return {"import": {"seconds": r["seconds"][0], "rss": None,
                           "frameworks": r["frameworks"]}}
    from .worker import run_case
    with tempfile.TemporaryDirectory(prefix="unifparam-report-") as tmp:
        if case == "memcpy":
            return memcpy_bound(m.nbytes, tmp)
        recs = run_case(config, case, size, 1, 0, tmp)
    out = {}
    for r in recs:
        if r.get("error"):
            out[r["case"]] = {"error": r["error"]}
        else:
            out[r["case"]] = {"seconds": r["seconds"][0], "rss": r["rss"][0]}
    return out


# ---- driver side ---------------------------------------------------------------------------
JOBS: list[tuple[str, str]] = [  # (config, case), each run --repeat times in fresh processes
    ("torch", "up-uniform"), ("torch", "native-default"), ("numpy", "numpy-split"),
    ("torch", "up-default"), ("keras:jax", "up-default"), ("keras:jax", "native-default"),
    ("flax", "up-default"), ("flax", "native-default"),
    ("keras:tensorflow", "up-uniform"), ("keras:tensorflow", "native-default"),
    ("keras:torch", "up-uniform"), ("keras:torch", "native-default"),
    ("torch", "gpt2-adopt"),
    ("torch", "native-ckpt"), ("torch", "up-ckpt"), ("flax", "up-ckpt"),
    ("keras:jax", "up-ckpt"), ("numpy", "memcpy"),
]
IMPORT_RUNS = 7


#: ``import unifparam`` timed in a bare interpreter (nothing imported before it but ``time``,
#: ``sys`` and ``json``, which plain startup loads or which cost < 1 ms), printed as one line.
IMPORT_CODE = """\
import sys, time
t0 = time.perf_counter()
import unifparam
dt = time.perf_counter() - t0
import json
fw = [m for m in ("torch", "tensorflow", "jax", "keras", "flax") if m in sys.modules]
print(json.dumps({"import": {"seconds": dt, "rss": None, "frameworks": fw,
                             "bytecode": not sys.dont_write_bytecode}}))
"""


def run_one(config: str, case: str, size: str) -> dict[str, dict]:
    cmd = [sys.executable, "-m", "benchmarks.report", "--worker", config, case, size]
    if case == "import":
        cmd = [sys.executable, "-c", IMPORT_CODE]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}
    if config.startswith("keras:"):
        env["KERAS_BACKEND"] = config.split(":", 1)[1]
    if config not in ("none", "numpy"):
        env["UNIFPARAM_BACKEND"] = config
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return {case: {"error": f"timeout (> {TIMEOUT:.0f} s)"}}
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("{")), None)
    if line is None:
        return {case: {"error": ((p.stderr.strip().splitlines() or ["no output"])[-1])[:200]}}
    return json.loads(line)


@dataclass
class Samples:
    """Runs of one measurement (one per fresh process)."""

    seconds: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def med(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def med_rss(self) -> float | None:
        return statistics.median(self.rss) if self.rss else None

    def spread(self) -> str:
        if not self.seconds:
            return "n/a" + (f" ({self.errors[-1]})" if self.errors else "")
        return f"{_s(self.med())} [{_s(min(self.seconds))}-{_s(max(self.seconds))}] " \
               f"n={len(self.seconds)}"


def _s(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.1f} ms"


def collect(size: str, repeat: int, log: Any = sys.stderr, runs: str | None = None
            ) -> dict[tuple[str, str], Samples]:
    """Every job, repeats interleaved (a burst of load hits all cases alike); each process's
    result is appended to ``runs`` (JSON lines) as it arrives, for ``--from``."""
    todo = [("none", "import")] * IMPORT_RUNS + \
        [(c, k) for _ in range(repeat) for c, k in JOBS]
    results = []
    for i, (config, case) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {config} {case} {size}", file=log, flush=True)
        got = run_one(config, case, size)
        results.append((config, got))
        if runs:
            with open(runs, "a") as f:
                f.write(json.dumps({"config": config, "results": got}) + "\n")
    return merge(results)


def merge(results: list[tuple[str, dict[str, dict]]]) -> dict[tuple[str, str], Samples]:
    """Samples per (config, case name) from every process's results."""
    out: dict[tuple[str, str], Samples] = {}
    for config, got in results:
        for name, r in got.items():
            s = out.setdefault((config, name), Samples())
            if "error" in r:
                s.errors.append(r["error"])
                continue
            s.seconds.append(r["seconds"])
            if r.get("rss") is not None:
                s.rss.append(r["rss"])
            s.extra.update({k: v for k, v in r.items() if k not in ("seconds", "rss")})
    return out


def rows(data: dict[tuple[str, str], Samples], nbytes: int) -> list[dict]:
    """The issue's table: one dict per row (what, up, reference, ratio, target, met)."""
    def get(c: str, k: str) -> Samples:
        return data.get((c, k), Samples())

    out: list[dict] = []

    def row(what: str, state: str, up: Samples, ref: Samples | None, target: str,
            ratio: float | None, met: bool | None, extra: str = "") -> None:
        out.append({"row": what, "memory": state, "unifparam": up.spread(),
                    "reference": ref.spread() if ref is not None else "-",
                    "ratio": ratio, "target": target, "met": met, "detail": extra})

    def ratio(a: Samples, b: Samples) -> float | None:
        return a.med() / b.med() if a.med() and b.med() else None

    up_u, eager = get("torch", "up-uniform"), get("torch", "native-default")
    r = ratio(up_u, eager)
    row("seeded uniform (torch) vs torch eager init", "fresh pages, both", up_u, eager,
        "<= 0.50x", r, None if r is None else r <= 0.5)

    pop, gen = get("numpy", "numpy-populate"), get("numpy", "numpy-generate")
    fresh = get("numpy", "numpy-fresh")
    r = ratio(up_u, fresh)
    detail = ""
    if pop.med() and gen.med():
        detail = (f"numpy first touch (MAP_POPULATE) {nbytes / pop.med() / GB:.2f} GB/s, "
                  f"generation into reused pages {nbytes / gen.med() / GB:.2f} GB/s; "
                  f"populate + generate {_s(pop.med() + gen.med())}")
    row("seeded uniform (torch) vs numpy PCG64 on both cores", "fresh pages, both "
        "(numpy: populate + generate)", up_u, fresh, "<= 1.25x", r,
        None if r is None else r <= 1.25, detail)

    for c, label in (("torch", "torch eager"), ("keras:jax", "Keras build"),
                     ("flax", "Flax init, no jit")):
        a, b = get(c, "up-default"), get(c, "native-default")
        r = ratio(a, b)
        row(f"default init {c} vs {label}", "fresh pages, both", a, b, "<= 1.05x", r,
            None if r is None else r <= 1.05)
    for c in ("keras:tensorflow", "keras:torch"):
        a, b = get(c, "up-uniform"), get(c, "native-default")
        r = ratio(a, b)
        row(f"seeded uniform {c} vs Keras build", "fresh pages, both", a, b, "<= 1.00x", r,
            None if r is None else r <= 1.0)

    g = get("torch", "gpt2-adopt")
    if g.med():
        pbytes = 4 * g.extra["params"]
        rate, peak = pbytes / g.med() / GB, (g.med_rss() or 0) / pbytes
        row(f"adopted GPT-2 XL from meta, seeded XavierUniform ({g.extra['params'] / 1e9:.2f}B)",
            "fresh pages", g, None, ">= 1 GB/s, peak <= 1.1x parameter bytes", None,
            rate >= 1 and peak <= 1.1,
            f"{rate:.2f} GB/s, peak {peak:.2f}x parameter bytes; {g.extra['note']}")
    else:
        row("adopted GPT-2 XL from meta, seeded XavierUniform", "fresh pages", g, None,
            ">= 1 GB/s, peak <= 1.1x", None, None)

    nsave = get("torch", "native-save")
    for c in ("torch", "flax", "keras:jax"):
        a = get(c, "up-save")
        r = ratio(a, nsave)
        extra = (a.med_rss() or 0) / nbytes
        met = None if r is None else r <= 1.0 and extra <= 0.1
        row(f"checkpoint save {c} vs safetensors.torch.save_file", "page cache (file written)",
            a, nsave, "<= 1.00x; extra peak RSS <= 0.1x parameter bytes", r, met,
            "" if r is None else f"{nbytes / a.med() / GB:.2f} GB/s, extra peak RSS "
            f"{extra:.2f}x parameter bytes (save_file {(nsave.med_rss() or 0) / nbytes:.2f}x)")

    mem = get("numpy", "memcpy-fresh")
    reused = get("numpy", "memcpy-reused")
    for c in ("flax", "keras:jax", "torch"):
        a = get(c, "up-load")
        if not (a.med() and mem.med()):
            row(f"checkpoint load into {c} vs memcpy", "file in page cache -> fresh pages", a,
                mem, ">= 50 % of memcpy; peak <= 1.1x parameter bytes", None, None)
            continue
        share = mem.med() / a.med()
        peak = (a.med_rss() or 0) / nbytes
        row(f"checkpoint load into {c} vs memcpy", "file in page cache -> fresh pages", a, mem,
            ">= 50 % of memcpy; peak <= 1.1x parameter bytes", a.med() / mem.med(),
            share >= 0.5 and peak <= 1.1,
            f"{nbytes / a.med() / GB:.2f} GB/s = {share:.0%} of memcpy into fresh pages "
            f"({nbytes / mem.med() / GB:.2f} GB/s; reused pages "
            f"{nbytes / reused.med() / GB if reused.med() else 0:.2f} GB/s); "
            f"peak {peak:.2f}x parameter bytes (includes mapped file pages)")

    imp = get("none", "import")
    fw = imp.extra.get("frameworks") or []
    worst = max(imp.seconds) if imp.seconds else None
    row("import unifparam over bare python", "-", imp, None,
        "<= 50 ms in every run, no framework", None,
        None if worst is None else worst <= 0.05 and not fw,
        f"slowest run {_s(worst)}; frameworks imported: {', '.join(fw) or 'none'}; "
        f"timed in a bare interpreter, "
        + ("bytecode cache usable" if imp.extra.get("bytecode", True)
           else "no bytecode cache (PYTHONDONTWRITEBYTECODE): compiled from source each run"))
    return out


def print_rows(table: list[dict], header: list[str]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    tty = sys.stdout.isatty()
    con = Console(width=None if tty else 250, no_color=not tty, highlight=False, markup=False)
    t = Table(title="issue 16 (median [min-max] over fresh processes; ratio = up / reference)",
              box=box.SIMPLE_HEAD if tty else box.ASCII)
    for col in ("row", "memory state", "unifparam", "reference", "ratio", "target", "met",
                "detail"):
        t.add_column(col)
    for r in table:
        t.add_row(r["row"], r["memory"], r["unifparam"], r["reference"],
                  f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-", r["target"],
                  {True: "met", False: "MISSED", None: "n/a"}[r["met"]], r["detail"])
    for line in header:
        con.print(line)
    con.print(t)


def to_markdown(table: list[dict], header: list[str]) -> str:
    cols = ("row", "memory state", "unifparam", "reference", "ratio", "target", "met", "detail")
    out = [f"- {h}" for h in header] + ["", "| " + " | ".join(cols) + " |",
                                        "|" + "---|" * len(cols)]
    for r in table:
        out.append("| " + " | ".join([
            r["row"], r["memory"], r["unifparam"], r["reference"],
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-", r["target"],
            {True: "met", False: "**MISSED**", None: "n/a"}[r["met"]], r["detail"]]) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker(*argv[1:4])))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks --report",
                                description=__doc__.splitlines()[0])
    p.add_argument("--sizes", "--size", dest="size", default="400m",
                   help="400m (the issue's 400M MLP) or mlp (a quick dry run)")
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per case (>= 3)")
    p.add_argument("--json", help="write rows, samples and machine description here")
    p.add_argument("--markdown", help="write the table as markdown here")
    p.add_argument("--runs", help="append each process's result here (JSON lines)")
    p.add_argument("--from", dest="from_runs",
                   help="build the table from a --runs file instead of measuring")
    args = p.parse_args(argv)
    from .__main__ import describe, machine
    from .models import MODELS
    info = machine()
    info["command"] = "python -m benchmarks --report " + " ".join(argv)
    if args.from_runs:
        with open(args.from_runs) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        data = merge([(x["config"], x["results"]) for x in lines])
        info["command"] += f" (table from the {len(lines)} processes in {args.from_runs})"
    else:
        data = collect(args.size, args.repeat, runs=args.runs)
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    table = rows(data, MODELS[args.size].nbytes)
    header = describe(info) + [f"model {args.size}: {MODELS[args.size].note or ''} "
                               f"({MODELS[args.size].params:,} params, "
                               f"{MODELS[args.size].nbytes / GB:.2f} GB)"]
    print_rows(table, header)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": table,
                       "samples": {f"{c} {k}": vars(s) for (c, k), s in data.items()}}, f,
                      indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(to_markdown(table, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
