"""The issue-16 report's table logic on made-up samples: no processes, no timing asserts.

    pytest tests/test_benchmarks_report.py
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.models import MODELS  # noqa: E402
from benchmarks.report import merge, rows  # noqa: E402

NBYTES = MODELS["400m"].nbytes


def ok(seconds, rss=None, **extra):
    return {"seconds": seconds, "rss": rss, **extra}


def results(up_uniform=1.0):
    """Two processes' worth of results for every case the report reads."""
    one = [
        ("torch", {"up-uniform": ok(up_uniform, NBYTES), "native-default": ok(2.0)}),
        ("numpy", {"numpy-populate": ok(0.5, NBYTES), "numpy-generate": ok(0.4),
                   "numpy-fresh": ok(0.8, NBYTES)}),
        ("torch", {"up-default": ok(2.0)}),
        ("keras:jax", {"up-default": ok(5.0), "native-default": ok(5.0)}),
        ("flax", {"up-default": ok(5.0), "native-default": ok(4.0)}),
        ("keras:tensorflow", {"up-uniform": ok(1.0), "native-default": ok(1.5)}),
        ("keras:torch", {"up-uniform": {"error": "boom"}, "native-default": ok(3.0)}),
        ("torch", {"gpt2-adopt": ok(3.0, 7e9, params=1_557_611_200, note="shapes")}),
        ("torch", {"native-save": ok(1.0, 0), "native-load": ok(0.1)}),
        ("torch", {"up-save": ok(0.9, 0), "up-load": ok(0.01, 0)}),
        ("flax", {"up-save": ok(2.0, NBYTES), "up-load": ok(2.0, 2 * NBYTES)}),
        ("keras:jax", {"up-save": ok(1.0, 0), "up-load": ok(1.0, NBYTES)}),
        ("numpy", {"memcpy-fresh": ok(0.4, NBYTES), "memcpy-reused": ok(0.2)}),
        ("none", {"import": ok(0.03, frameworks=[])}),
    ]
    return one + one


@pytest.fixture
def table():
    class Table(dict):
        def __getitem__(self, prefix):
            (hit,) = [r for name, r in self.items() if name.startswith(prefix)]
            return hit
    return Table({r["row"]: r for r in rows(merge(results()), NBYTES)})


def test_every_issue_row_is_reported_with_a_target(table):
    assert len(table) == 15
    assert all(r["target"] for r in table.values())
    eager = table["seeded uniform (torch) vs torch eager init"]
    assert eager["ratio"] == pytest.approx(0.5) and eager["met"] is True
    assert "n=2" in eager["unifparam"] and "fresh pages" in eager["memory"]


def test_numpy_bound_compares_the_same_memory_state(table):
    row = table["seeded uniform (torch) vs numpy PCG64 on both cores"]
    assert row["ratio"] == pytest.approx(1.0 / 0.8)
    assert row["met"] is True  # 1.25 <= 1.25
    assert "first touch" in row["detail"] and "reused pages" in row["detail"]


def test_misses_and_failures_are_not_reported_as_met(table):
    assert table["default init flax vs Flax init, no jit"]["met"] is False  # 1.25x
    failed = table["seeded uniform keras:torch vs Keras build"]
    assert failed["met"] is None and "boom" in failed["unifparam"]
    save = table["checkpoint save flax vs safetensors.torch.save_file"]
    assert save["met"] is False  # slower and +1x memory
    gpt = table["adopted GPT-2 XL from meta, seeded XavierUniform"]
    assert gpt["met"] is False and "peak 1.12x" in gpt["detail"]


def test_load_is_read_against_memcpy(table):
    jax = table["checkpoint load into keras:jax vs memcpy"]
    assert jax["met"] is False and "40% of memcpy" in jax["detail"]
    assert table["import unifparam over bare python"]["met"] is True


def test_params_rows_divide_by_tensors_not_scalars():
    assert MODELS["params4k"].tensors == 4000
    assert MODELS["params4k"].params == 144_000
