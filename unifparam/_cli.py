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


def configurations(which: str) -> list[str]:
    """Backend names to run: one name, or ``all`` installed ones with every variant."""
    from ._registry import registered
    if which != "all":
        return [which]

    out = []
    for name, info in registered().items():
        if not info.installed():
            continue
        if info.variants:
            out += [f"{name}:{v}" for v in info.variants if info.variant_installed(v)]
        else:
            out.append(name)
    return out


def cmd_backends(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ._registry import registered
    table = Table(title="unifparam backends")
    for col in ("backend", "installed", "framework", "version", "variants", "install with"):
        table.add_column(col)
    for name, info in registered().items():
        ok = info.installed()
        table.add_row(name, "yes" if ok else "no", info.distribution,
                      info.framework_version() or "-", ", ".join(info.variants) or "-",
                      "" if ok else escape(info.install))  # [extra] is not markup
    Console().print(table)
    return 0


TEST_INSTALL = "pip install 'unifparam[test]'"


def _importable(module: str) -> bool:
    """True if ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def preflight(backend: str) -> None:
    """Fail before running the suite if pytest or the backend's framework is missing."""
    from ._registry import info, split_name
    from .errors import BackendNotInstalledError
    if not _importable("pytest"):
        raise BackendNotInstalledError(
            f"The conformance suite runs under pytest, which is not installed. "
            f"Install it with: {TEST_INSTALL}")
    found = info(backend)  # BackendNotFoundError for an unknown name
    base, variant = split_name(backend)
    missing, hint = [m for m in found.requires if not _importable(m)], found.install
    if variant and not missing and not found.variant_installed(variant):  # keras:jax, no jax
        missing, hint = [variant], f"pip install 'unifparam[{variant}]'"
    if missing:
        raise BackendNotInstalledError(
            f"Backend {backend!r} needs {', '.join(missing)}, which is not installed. "
            f"Install it with: {hint}")


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
    from rich.console import Console
    from rich.table import Table

    from .errors import BackendNotInstalledError
    backends = configurations(args.backend)
    if not backends:
        from ._registry import registered
        raise BackendNotInstalledError(
            "No backend is installed, so there is nothing to test. Install one, e.g. "
            + "; ".join(i.install for i in registered().values()))
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
    Console().print(table)
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
    return 1 if failed else 0


def cmd_tour(args: argparse.Namespace) -> int:
    from ._tour import run
    run(args.backend)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint import inspect_file
    print(inspect_file(args.file))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unifparam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list backends, whether installed, framework versions")
    p = sub.add_parser("conformance", help="run the shared suite, print the scenario matrix")
    p.add_argument("--backend", default="all", help="a backend name (keras:jax) or all")
    p.add_argument("--json", help="also write the matrix and per-test results here")
    p = sub.add_parser("tour", help="walk the chapters' scenarios on one backend")
    p.add_argument("--backend", default=None, help="default: UNIFPARAM_BACKEND")
    p = sub.add_parser("inspect", help="summary of a unifparam safetensors checkpoint")
    p.add_argument("file")
    args = parser.parse_args(argv)
    handlers = {"backends": cmd_backends, "conformance": cmd_conformance, "tour": cmd_tour,
                "inspect": cmd_inspect}
    from .errors import UnifparamError
    try:
        return handlers[args.command](args)
    except UnifparamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
