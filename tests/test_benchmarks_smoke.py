"""Smoke test of the benchmark harness: small models, torch only, one run; no timing asserts.

    pytest tests/test_benchmarks_smoke.py
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="needs torch")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    js, md = out / "bench.json", out / "bench.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--backends", "torch", "--sizes", "small",
         "--repeat", "1", "--json", str(js), "--markdown", str(md)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(js.read_text()), md.read_text()


def test_table_has_the_columns_and_sections(run):
    stdout, data, md = run
    for col in ("case", "native path", "unifparam", "native", "up/native", "GB/s up",
                "peak RSS up", "target"):
        assert col in stdout and col in md
    sections = {r["section"] for r in data["rows"]}
    assert sections == {"1 default init", "2 seeded uniform", "3 seeded normal", "6 params()",
                        "7 import", "8 checkpoint save", "8 checkpoint load"}
    assert "cores" in md and data["machine"]["versions"]["torch"] != "-"


def test_every_torch_pair_has_a_ratio(run):
    _, data, _ = run
    rows = [r for r in data["rows"] if r["config"] == "torch"]
    models = {r["model"] for r in rows}
    assert models == {"mlp", "rgnet", "params4k"}
    paths = {r["native_path"] for r in rows if r["model"] == "mlp"}
    assert {"torch eager nn.Linear", "torch LazyLinear + first forward",
            "torch meta -> to_empty -> normal_", "numpy Philox, 2 threads",
            "safetensors.torch save_file"} <= paths
    for r in rows:
        assert r["up_s"] is not None and r["native_s"] is not None, r
        assert r["ratio"] == pytest.approx(r["up_s"] / r["native_s"])


def test_import_row_reports_frameworks(run):
    _, data, _ = run
    (imp,) = [r for r in data["rows"] if r["section"] == "7 import"]
    assert imp["up_s"] is not None and "framework" in imp["target"]
