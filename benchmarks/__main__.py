"""Run the benchmark suite and print one table of unifparam vs native, with ratios.

    python -m benchmarks                                   # all backends, small+400m+abstract
    python -m benchmarks --quick                           # small models only
    python -m benchmarks --report --sizes 400m --repeat 3  # issue 16's targets, met/missed
    python -m benchmarks --backends torch,keras:jax --sizes 400m --repeat 3 \\
        --json bench.json --markdown bench.md

Materialization at 400m runs in a fresh process per run (one median over ``--repeat``
processes); small models, abstract shapes, ``params()`` and checkpoints run in one fresh
process per configuration with one warm-up and ``--repeat`` timed runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .models import MODELS
from .worker import NUMPY_CASES, valid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_CONFIGS = ("torch", "keras:tensorflow", "keras:jax", "keras:torch", "flax")
JIT_TIMEOUT = 120.0
TIMEOUT = 900.0
GB = 1e9


# ---- planning -----------------------------------------------------------------------------
def native_installed(config: str) -> bool:
    """Whether the framework of ``config`` is importable (the native side can run)."""
    need = {"torch": ["torch"], "flax": ["flax", "jax"]}.get(config)
    if need is None:
        need = ["keras", config.split(":", 1)[1]]
    return all(importlib.util.find_spec(m) is not None for m in need)


def select_configs(which: str) -> tuple[list[str], set[str]]:
    """(configurations to measure, those whose unifparam backend is usable)."""
    from unifparam._cli import configurations
    up_ok = set(configurations("all"))
    wanted = list(NATIVE_CONFIGS) if which == "all" else [w.strip() for w in which.split(",")]
    configs = [c for c in wanted if c in up_ok or (c in NATIVE_CONFIGS and native_installed(c))]
    return configs, up_ok


def native_cases(config: str, size: str) -> list[str]:
    """The native cases that have a meaning for ``config`` (native-uniform where it differs)."""
    if config == "torch":
        return ["native-default", "native-lazy", "native-normal"]
    if config == "flax":
        return ["native-default", "native-uniform"] + (["native-normal-jit"] if size == "400m"
                                                      else [])
    return ["native-default", "native-normal"]


@dataclass
class Job:
    """One worker process."""

    config: str
    cases: list[str]
    sizes: list[str]
    repeat: int = 1
    warmup: int = 0
    timeout: float = TIMEOUT


def plan(configs: list[str], up_ok: set[str], sizes: list[str], repeat: int) -> list[Job]:
    """Every worker process of one run, interleaving repeats of the 400m runs."""
    up = ["up-default", "up-uniform", "up-normal"]
    jobs: list[Job] = [Job("none", ["import"], ["mlp"]) for _ in range(repeat)]
    small = ["mlp", "rgnet"] if "small" in sizes else []
    for c in configs:
        mine = up if c in up_ok else []
        if small:
            jobs.append(Job(c, mine + ["up-ckpt"] * (c in up_ok) + native_cases(c, "mlp"), small,
                            repeat, 1))
        jobs.append(Job(c, [x for x in ("up-params", "native-params")
                            if x.startswith("native") or c in up_ok], ["params4k"], repeat, 1))
        if "abstract" in sizes:  # own process: a case that allocates is aborted with the rest
            jobs.append(Job(c, [x for x in ("up-abstract", "native-abstract")
                                if x.startswith("native") or c in up_ok],
                            ["400m", "7b", "70b"], repeat, 1))
    has_torch = native_installed("torch")
    if small:
        jobs.append(Job("numpy", list(NUMPY_CASES), small, repeat, 1))
        if has_torch:
            jobs.append(Job("torch", ["native-ckpt"], small, repeat, 1))
    if "400m" in sizes:
        for _ in range(repeat):
            for c in configs:
                for case in (up if c in up_ok else []) + native_cases(c, "400m"):
                    timeout = JIT_TIMEOUT if case.endswith("-jit") else TIMEOUT
                    jobs.append(Job(c, [case], ["400m"], timeout=timeout))
            jobs += [Job("numpy", [case], ["400m"]) for case in NUMPY_CASES]
        jobs += [Job(c, ["up-ckpt"], ["400m"]) for c in configs if c in up_ok]  # one run each
        if has_torch:
            jobs.append(Job("torch", ["native-ckpt"], ["400m"]))
    return jobs


# ---- running ------------------------------------------------------------------------------
def run_job(job: Job) -> list[dict]:
    """Run one worker; its records (an error record per case if it failed or timed out)."""
    cmd = [sys.executable, "-m", "benchmarks.worker", "--backend", job.config,
           "--case", ",".join(job.cases), "--size", ",".join(job.sizes),
           "--repeat", str(job.repeat), "--warmup", str(job.warmup)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    if job.config.startswith("keras:"):
        env["KERAS_BACKEND"] = job.config.split(":", 1)[1]
    if job.config not in ("none", "numpy"):
        env["UNIFPARAM_BACKEND"] = job.config
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=job.timeout)
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), None)
        if line is not None:
            got = json.loads(line)["records"]
            seen = {(r["case"], r["model"]) for r in got}
            lost = [{"config": job.config, "case": c, "model": sz, "params": MODELS[sz].params,
                     "bytes": MODELS[sz].nbytes, "seconds": [], "rss": [],
                     "error": "not measured: the process was aborted on an earlier case"}
                    for c in job.cases for sz in job.sizes
                    if proc.returncode != 0 and (c, sz) not in seen
                    and valid(c, sz, MODELS[sz].abstract_only)]
            return got + lost
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    except subprocess.TimeoutExpired:
        error = f"timeout (> {job.timeout:.0f} s)"
    return [{"config": job.config, "case": c, "model": s, "params": MODELS[s].params,
             "bytes": MODELS[s].nbytes, "seconds": [], "rss": [], "error": error}
            for c in job.cases for s in job.sizes]


def run_all(jobs: list[Job], log: Any = sys.stderr) -> dict[tuple[str, str, str], dict]:
    """Run every job; records merged by (config, case, model), runs appended."""
    merged: dict[tuple[str, str, str], dict] = {}
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.config}: {','.join(job.cases)} on "
              f"{','.join(job.sizes)}", file=log, flush=True)
        for r in run_job(job):
            key = (r["config"], r["case"], r["model"])
            if key not in merged:
                merged[key] = r
            else:
                merged[key]["seconds"] += r["seconds"]
                merged[key]["rss"] += r["rss"]
                merged[key]["error"] = merged[key]["error"] if r["error"] is None \
                    else r["error"]
    return merged


# ---- machine ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """Date, cores, memory, CPU model, load, library versions, git revision."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "-"
    cpu = "-"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((x.split(":", 1)[1].strip() for x in f if x.startswith("model name")), "-")
    except OSError:
        pass

    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "-"
    dists = ("numpy", "torch", "tensorflow-cpu", "keras", "jax", "jaxlib", "flax",
             "safetensors", "unifparam")
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "nproc": sh("nproc"), "free_g": sh("free", "-g"), "cpu": cpu,
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(), "git": sh("git", "rev-parse", "--short", "HEAD"),
            "versions": {d: ver(d) for d in dists}}


# ---- rows ---------------------------------------------------------------------------------
SECTIONS = ("1 default init", "2 seeded uniform", "3 seeded normal", "5 abstract",
            "6 params()", "7 import", "8 checkpoint save", "8 checkpoint load")
UNIFORM_TARGET = {"torch": 0.5, "keras:tensorflow": 1 / 1.5, "keras:jax": 0.25, "flax": 0.25}
Pair = tuple[str, str, str, str, str, float | None]  # section, up, ref config, ref case, label,
#                                                      ratio target (None: reference only)


def pairs(config: str, model: str) -> list[Pair]:
    """Every (unifparam case, native case) pair measured for ``config`` on ``model``."""
    c, big = config, model == "400m"
    out: list[Pair] = []
    if model in ("mlp", "rgnet", "400m"):
        kind = "torch" if c == "torch" else "flax" if c == "flax" else "keras"
        default = {"torch": [("native-default", "torch eager nn.Linear"),
                             ("native-lazy", "torch LazyLinear + first forward")],
                   "keras": [("native-default", "Keras build")],
                   "flax": [("native-default", "Flax init, no jit")]}[kind]
        out += [("1 default init", "up-default", c, k, lbl, None) for k, lbl in default]
        uniform = {"torch": ("native-default", "torch eager (kaiming uniform)"),
                   "keras": ("native-default", "Keras build (glorot uniform)"),
                   "flax": ("native-uniform", "Flax init xavier_uniform, no jit")}[kind]
        out.append(("2 seeded uniform", "up-uniform", c, *uniform,
                    UNIFORM_TARGET.get(c) if big else None))
        normal = {"torch": [("native-normal", "torch meta -> to_empty -> normal_", 1.0)],
                  "keras": [("native-normal", "Keras build, RandomNormal", None)],
                  "flax": [("native-default", "Flax init (LeCun normal), no jit", None)]
                  + ([("native-normal-jit", "Flax jax.jit(init)", 0.5)] if big else [])}[kind]
        out += [("3 seeded normal", "up-normal", c, k, lbl, t if big else None)
                for k, lbl, t in normal]
        for fam, sec in (("uniform", "2 seeded uniform"), ("normal", "3 seeded normal")):
            out += [(sec, f"up-{fam}", "numpy", f"numpy-{fam}-philox",
                     "numpy Philox, 2 threads", 1.1 if big else None),
                    (sec, f"up-{fam}", "numpy", f"numpy-{fam}-pcg64", "numpy PCG64, 2 threads",
                     None)]
        out += [("8 checkpoint save", "up-save", "torch", "native-save",
                 "safetensors.torch save_file", None),
                ("8 checkpoint load", "up-load", "torch", "native-load",
                 "load_file + load_state_dict", None)]
    if model in ("400m", "7b", "70b"):
        label = {"torch": "torch meta device", "flax": "jax.eval_shape(init)"}.get(
            c, "(Keras: none public)")
        out.append(("5 abstract", "up-abstract", c, "native-abstract", label, None))
    if model == "params4k":
        label = {"torch": "named_parameters()", "flax": "traverse_util.flatten_dict"}.get(
            c, "model.weights + paths")
        out.append(("6 params()", "up-params", c, "native-params", label, None))
    return out


def _stats(rec: dict | None) -> tuple[float | None, float | None]:
    if not rec or rec.get("error") or not rec["seconds"]:
        return None, None
    rss = [x for x in rec["rss"] if x is not None]
    return median(rec["seconds"]), median(rss)


def _targets(section: str, model: str, up_s: float | None, up_rss: float | None,
             ratio: float | None, limit: float | None, nbytes: int) -> tuple[str, bool | None]:
    """The issue-6 target text for one row and whether every part of it is met."""
    checks: list[tuple[str, bool]] = []
    if limit is not None and ratio is not None:
        checks.append((f"ratio <= {limit:.2f}", ratio <= limit))
    if model == "400m" and up_rss is not None and section in SECTIONS[1:3]:
        checks.append((f"RSS {up_rss / nbytes:.2f}x bytes <= 1.1", up_rss <= 1.1 * nbytes))
    if section == "5 abstract" and model == "400m" and up_s is not None:
        checks.append(("<= 50 ms", up_s <= 0.05))
        if up_rss is not None:
            checks.append(("<= 10 MB", up_rss <= 10e6))
    if section == "6 params()" and up_s is not None:
        checks.append(("<= 2 us/param", up_s / MODELS[model].tensors <= 2e-6))
    if not checks:
        return "", None
    met = all(ok for _, ok in checks)
    return "; ".join(f"{t} {'met' if ok else 'MISSED'}" for t, ok in checks), met


def build_rows(records: dict[tuple[str, str, str], dict], configs: list[str], up_ok: set[str],
               sizes: list[str]) -> tuple[list[dict], list[str]]:
    """Table rows (raw numbers and target verdicts) and notes (why a cell is n/a)."""
    models = (["mlp", "rgnet"] if "small" in sizes else []) + \
        (["400m"] if "400m" in sizes or "abstract" in sizes else []) + \
        (["7b", "70b"] if "abstract" in sizes else []) + ["params4k"]
    rows, notes = [], []
    for r in records.values():
        if r.get("error"):
            notes.append(f"{r['config']} {r['case']} {r['model']}: {r['error']}")
    for model in models:
        for c in configs:
            for section, up_case, ref_c, ref_case, label, limit in pairs(c, model):
                if section in SECTIONS[:3] + SECTIONS[6:] and model == "400m" \
                        and "400m" not in sizes:
                    continue
                if section == "5 abstract" and "abstract" not in sizes:
                    continue
                up = records.get((c, up_case, model))
                ref = records.get((ref_c, ref_case, model))
                if up is None and up_case != "up-abstract" and c not in up_ok:
                    note = f"{c} unifparam: n/a (backend not available)"
                    if note not in notes:
                        notes.append(note)
                up_s, up_rss = _stats(up)
                ref_s, ref_rss = _stats(ref)
                ratio = up_s / ref_s if up_s and ref_s else None
                nbytes = MODELS[model].nbytes
                target, met = _targets(section, model, up_s, up_rss, ratio, limit, nbytes)
                rows.append({"section": section, "model": model, "config": c,
                             "native_path": label, "up_s": up_s, "native_s": ref_s,
                             "ratio": ratio, "up_rss": up_rss, "native_rss": ref_rss,
                             "bytes": nbytes, "target": target, "met": met,
                             "runs": len(up["seconds"]) if up else 0})
    imp = [r for k, r in records.items() if k[1] == "import"]
    if imp:
        rec = imp[0]
        s = median(rec["seconds"]) if rec["seconds"] else None
        fw = rec.get("frameworks") or []
        checks = [("<= 50 ms", s is not None and s <= 0.05),
                  ("imports no framework" if not fw else f"imports {', '.join(fw)}", not fw)]
        rows.append({"section": "7 import", "model": "-", "config": "-",
                     "native_path": "(plain python)", "up_s": s, "native_s": None,
                     "ratio": None, "up_rss": None, "native_rss": None, "bytes": 0,
                     "target": "; ".join(f"{t} {'met' if ok else 'MISSED'}" for t, ok in checks),
                     "met": all(ok for _, ok in checks), "runs": len(rec["seconds"])})
    order = {s: i for i, s in enumerate(SECTIONS)}
    rows.sort(key=lambda r: (order[r["section"]], list(MODELS).index(r["model"])
                             if r["model"] in MODELS else 99))
    return rows, notes


# ---- formatting ---------------------------------------------------------------------------
COLUMNS = ("case", "model", "config", "native path", "unifparam", "native", "up/native",
           "GB/s up", "GB/s native", "peak RSS up", "peak RSS native", "target")


def _fmt_s(x: float | None, model: str) -> str:
    if x is None:
        return "n/a"
    if model == "params4k":
        return f"{x / MODELS[model].tensors * 1e6:.2f} us/param"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.1f} ms" if x >= 1e-3 else f"{x * 1e6:.0f} us"


def _fmt_b(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / GB:.2f} GB" if abs(x) >= 0.1 * GB else f"{x / 1e6:.1f} MB"


def cells(row: dict) -> list[str]:
    """One row as the table's text cells."""
    m = row["model"]
    rate = row["section"][0] in "1238"

    def gbps(s: float | None) -> str:
        return f"{row['bytes'] / s / GB:.2f}" if rate and s else "-"
    return [row["section"], m, row["config"], row["native_path"], _fmt_s(row["up_s"], m),
            _fmt_s(row["native_s"], m) if row["section"] != "7 import" else "-",
            f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-",
            gbps(row["up_s"]), gbps(row["native_s"]), _fmt_b(row["up_rss"]),
            _fmt_b(row["native_rss"]), row["target"]]


def describe(info: dict) -> list[str]:
    """Machine description lines for the table's header and docs/performance.md."""
    mem = next((x for x in info["free_g"].splitlines() if x.startswith("Mem:")), "-")
    v = ", ".join(f"{k} {x}" for k, x in info["versions"].items())
    total = mem.split()[1] if len(mem.split()) > 1 else "?"
    load = f"load average {info['loadavg']} at start, {info.get('loadavg_end', '-')} at end"
    return [f"date {info['date']}; git {info['git']}; command: {info['command']}",
            f"machine: {info['nproc']} cores, {info['cpu']}; {total} GiB memory (free -g); {load}",
            f"python {info['python']}; {v}"]


def print_table(rows: list[dict], notes: list[str], info: dict) -> None:
    """One rich table (plain ASCII when stdout is not a terminal), then the notes."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    tty = sys.stdout.isatty()
    console = Console(width=None if tty else 250, no_color=not tty, highlight=False)
    table = Table(title="unifparam benchmarks (median; ratio = unifparam / native)",
                  box=box.SIMPLE_HEAD if tty else box.ASCII)
    for col in COLUMNS:
        table.add_column(col, no_wrap=not tty)
    for row in rows:
        table.add_row(*cells(row))
    for line in describe(info):
        console.print(line)
    console.print(table)
    for n in notes:
        console.print(f"note: {n}")


def to_markdown(rows: list[dict], notes: list[str], info: dict) -> str:
    """The table and machine description as markdown, for docs/performance.md."""
    out = ["# unifparam benchmarks", ""] + [f"- {x}" for x in describe(info)] + [""]
    out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="all", help="all, or e.g. torch,keras:jax,flax")
    p.add_argument("--sizes", default="small,400m,abstract", help="small, 400m, abstract")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    p.add_argument("--quick", action="store_true", help="small models only")
    p.add_argument("--json", help="write records, rows and machine description here")
    p.add_argument("--markdown", help="write the table and machine description here")
    p.add_argument("--report", action="store_true",
                   help="issue 16's table: every target met/missed (benchmarks/report.py)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--report" in argv:
        from .report import main as report
        return report([a for a in argv if a != "--report"])
    args = p.parse_args(argv)
    sizes = ["small"] if args.quick else [s.strip() for s in args.sizes.split(",")]
    unknown = set(sizes) - {"small", "400m", "abstract"}
    if unknown:
        p.error(f"unknown sizes {sorted(unknown)}; use small, 400m, abstract")
    configs, up_ok = select_configs(args.backends)
    if not configs:
        p.error(f"no backend configuration installed among {args.backends!r}")
    info = machine()
    info["command"] = "python -m benchmarks " + " ".join(argv if argv is not None else
                                                         sys.argv[1:])
    records = run_all(plan(configs, up_ok, sizes, args.repeat))
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows, notes = build_rows(records, configs, up_ok, sizes)
    print_table(rows, notes, info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows, "notes": notes,
                       "records": list(records.values())}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(to_markdown(rows, notes, info))
    return 0


def median(xs: list[float]) -> float | None:
    """The median, or None for no runs."""
    return statistics.median(xs) if xs else None


if __name__ == "__main__":
    sys.exit(main())
