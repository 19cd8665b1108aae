"""The ``unifparam`` command: ``backends``, ``conformance``, ``tour``, ``inspect``.

    unifparam backends
    unifparam conformance --backend all --json matrix.json
    UNIFPARAM_BACKEND=keras:jax unifparam tour
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

DESCRIPTION = "unifparam: one parameter API over torch, Keras 3, Flax and MXNet Gluon."
EXAMPLES = """examples:
  unifparam backends                          what is installed, how to install the rest
  unifparam tour --backend keras:jax          the chapters' scenarios on one backend
  unifparam conformance --backend all         the scenario x backend matrix
  unifparam inspect model.safetensors         a checkpoint's summary
"""


def configurations(which: str) -> list[str]:
    """Backend names to run: one name, or ``all`` installed ones with every variant."""
    return [which] if which != "all" else [c for c, ok in every_configuration() if ok]


def every_configuration() -> list[tuple[str, bool]]:
    """Every registered configuration (each variant of a backend) and whether it can run."""
    from ._registry import registered
    out = []
    for name, info in registered().items():
        if info.variants:
            out += [(f"{name}:{v}", info.installed() and info.variant_installed(v))
                    for v in info.variants]
        else:
            out.append((name, info.installed()))
    return out


def _console(*renderables: Any) -> None:
    """Print rich renderables at their natural width, never cut: a pipe or a CI log gets
    80 columns by default, which folds a wide table's cells and ellipsizes its headers."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console()
    unbounded = console.options.update_width(10_000)
    wide = max(Measurement.get(console, unbounded, r).maximum for r in renderables)
    if wide > console.width:
        console = Console(width=wide)
    for r in renderables:
        console.print(r)


def cmd_backends(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ._install import hint
    from ._registry import registered
    table = Table(title="unifparam backends")
    for col in ("backend", "installed", "framework", "version", "variants"):
        table.add_column(col)
    missing = []
    for name, info in registered().items():
        ok = info.installed()
        table.add_row(name, "yes" if ok else "no", info.distribution,
                      info.framework_version() or "-", ", ".join(info.variants) or "-")
        if not ok:
            missing.append(f"  {name}: {hint(info.install)}")
    _console(table)
    # plain lines, not table cells: a cell narrower than a command would cut or fold it
    if missing:
        print("install what is missing with:", *missing, sep="\n")
    return 0


def _importable(module: str) -> bool:
    """True if ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def preflight(backend: str) -> None:
    """Fail before running the suite if pytest or the backend's framework is missing."""
    from ._install import command, hint
    from ._registry import info, not_installed, split_name
    from .errors import BackendNotInstalledError
    if not _importable("pytest"):
        raise BackendNotInstalledError(
            f"The conformance suite runs under pytest, which is not installed. "
            f"Install it with: {command('test')}")
    found = info(backend)  # BackendNotFoundError for an unknown name
    base, variant = split_name(backend)
    missing, how = [m for m in found.requires if not _importable(m)], hint(found.install)
    if variant and not missing and not found.variant_installed(variant):  # keras:jax, no jax
        missing, how = [variant], command(variant)
    if missing:
        raise BackendNotInstalledError(
            f"Backend {backend!r} needs {not_installed(tuple(missing))}. "
            f"Install it with: {how}")


def run_suite(backend: str, extra: Sequence[str] = ()) -> dict:
    """Run the conformance suite for one backend in its own process; its JSON results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        cmd = [sys.executable, "-m", "pytest", "--pyargs", "unifparam.conformance",
               f"--unifparam-backend={backend}", f"--unifparam-json={out}", "-q",
               "-p", "no:cacheprovider", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not os.path.exists(out):
            error = proc.stdout[-3000:] + proc.stderr[-3000:]
            return {"backend": backend, "results": [], "error": error}
        with open(out) as f:
            data = json.load(f)
        data["returncode"] = proc.returncode
        data["output"] = proc.stdout[-20000:] if proc.returncode else proc.stdout[-300:]
        return data


def matrix(runs: list[dict]) -> dict[str, dict[str, str]]:
    """scenario (or test group) -> backend -> pass / xfail / fail."""
    rank = {"passed": 0, "xfail": 1, "skipped": 2, "failed": 3, "xpass": 3}
    label = {0: "pass", 1: "xfail", 2: "skip", 3: "FAIL"}
    rows: dict[str, dict[str, int]] = {}
    for run in runs:
        for r in run["results"]:
            key = r["scenario"] or f"{r.get('group', 'other')} (other tests)"
            cell = rows.setdefault(key, {})
            cell[run["backend"]] = max(cell.get(run["backend"], 0), rank.get(r["outcome"], 3))
        if run.get("error"):
            rows.setdefault("(suite did not run)", {})[run["backend"]] = 3

    def order(k: str) -> tuple:
        number = int(k[1:]) if k[1:].isdigit() else 0
        return (not (k[:1] in "PL" and k[1:].isdigit()), k[0], number, k)
    return {k: {b: label[v] for b, v in rows[k].items()} for k in sorted(rows, key=order)}


def cmd_conformance(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ._install import hint
    from ._registry import registered
    from .errors import BackendNotInstalledError
    every = every_configuration() if args.backend == "all" else [(args.backend, True)]
    backends, skipped = [c for c, ok in every if ok], [c for c, ok in every if not ok]
    if not backends:
        raise BackendNotInstalledError(
            "No backend is installed, so there is nothing to test. Install one, e.g. "
            + "; ".join(hint(i.install) for i in registered().values()))
    for b in backends:
        preflight(b)
    runs = []
    for b in backends:
        print(f"running the conformance suite on {b} ...", file=sys.stderr, flush=True)
        runs.append(run_suite(b))
    grid = matrix(runs)
    table = Table(title="unifparam conformance")
    table.add_column("scenario")
    for b in backends:
        table.add_column(b, justify="center")
    for key, cells in grid.items():
        table.add_row(key, *(cells.get(b, "-") for b in backends))
    _console(table)
    failed = [r for r in runs if r.get("error") or r.get("returncode", 1) != 0]
    for r in failed:
        print(f"\n---- {r['backend']}: pytest output ----\n{r.get('error') or r.get('output')}")
    totals: dict[str, int] = {"passed": 0, "failed": 0, "xfail": 0, "xpass": 0, "skipped": 0}
    for r in runs:
        counts: dict[str, int] = {}
        for x in r["results"]:
            counts[x["outcome"]] = counts.get(x["outcome"], 0) + 1
            totals[x["outcome"]] = totals.get(x["outcome"], 0) + 1
        print(f"{r['backend']}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matrix": grid, "runs": runs}, f, indent=1)
    bad = totals["failed"] + totals["xpass"] + sum(1 for r in runs if r.get("error"))
    print(f"conformance: {totals['passed']} passed, {bad} failed, {totals['xfail']} xfailed")
    if skipped:
        print(f"skipped, not installed: {', '.join(skipped)} (unifparam backends says how to "
              f"install them)")
    return 1 if failed else 0


def cmd_tour(args: argparse.Namespace) -> int:
    from ._tour import run
    run(args.backend)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint import inspect_file
    print(inspect_file(args.file))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand each for backends, conformance, tour, inspect."""
    top = argparse.ArgumentParser(prog="unifparam", description=DESCRIPTION, epilog=EXAMPLES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("backends", help="list backends, whether installed, framework versions",
                   description="List every registered backend, whether its framework is "
                               "installed, its version and variants, and how to install "
                               "what is missing.")
    p = sub.add_parser("conformance", help="run the shared suite, print the scenario matrix",
                       description="Run the shared conformance suite (under pytest) on one "
                                   "backend or on every installed one, and print the "
                                   "scenario x backend matrix (pass / xfail / FAIL).")
    p.add_argument("--backend", default="all",
                   help="a backend name (torch, keras:jax, flax:nnx, ...) or all (default: "
                        "every installed configuration; the others are listed as skipped)")
    p.add_argument("--json", metavar="FILE", help="also write the matrix and per-test "
                                                  "results to FILE")
    p = sub.add_parser("tour", help="walk the chapters' scenarios on one backend",
                       description="Run the Parameter Management (P1-P14) and Lazy "
                                   "Initialization (L1-L13) scenarios in the chapters' order, "
                                   "printing each one's code and its output.")
    p.add_argument("--backend", default=None,
                   help="torch, keras:jax, flax, ... (default: UNIFPARAM_BACKEND, else the "
                        "first installed)")
    p = sub.add_parser("inspect", help="summary of a safetensors checkpoint",
                       description="Print a checkpoint's summary: names, shapes, dtypes, "
                                   "ties, size, and the saved model's summary when recorded. "
                                   "No framework is needed.")
    p.add_argument("file", help="a .safetensors file, e.g. one written by unifparam.save")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handlers = {"backends": cmd_backends, "conformance": cmd_conformance, "tour": cmd_tour,
                "inspect": cmd_inspect}
    from .errors import UnifparamError
    try:
        return handlers[args.command](args)
    except UnifparamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `unifparam inspect f | head` closed the pipe: stop quietly
        # Python flushes stdout again at exit; point it at devnull so that flush succeeds
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)


if __name__ == "__main__":
    sys.exit(main())
