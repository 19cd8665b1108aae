"""MXNet against torch, across two virtual environments.

MXNet 1.9.1 needs numpy < 1.24 and so lives in its own venv (``nox -s mxnet``), apart from
torch. Its side is recorded there, by this file run as a script::

    python tests/test_crossbackend_mxnet.py record .crossbackend

which writes the cross-backend recording (``mxnet.npz``, the format of
``unifparam.conformance.crossbackend``), the tour's text, one checkpoint per cross-backend
case and the tutorials' outputs (docs/tutorials, run by the site's runner). These tests, in
the main venv, compare that with torch: the recordings agree, the tour prints the same
text, checkpoints load both ways and every tutorial cell shows what it shows on torch.

When the mxnet venv's interpreter is found (``.nox/mxnet/bin/python`` or
``UNIFPARAM_MXNET_PYTHON``) the MXNet side is recorded afresh; else the files ``nox -s
mxnet`` left in ``.crossbackend/`` are used; else the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unifparam.conformance import crossbackend

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / ".crossbackend"
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
HOW = ("run `nox -s mxnet` first (MXNet 1.9.1 needs its own venv with numpy < 1.24), or set "
       "UNIFPARAM_MXNET_PYTHON to an interpreter with mxnet and this repository installed")


def mxnet_python() -> str | None:
    """The mxnet venv's interpreter, if there is one."""
    given = os.environ.get("UNIFPARAM_MXNET_PYTHON")
    path = Path(given) if given else ROOT / ".nox" / "mxnet" / "bin" / "python"
    return str(path) if path.exists() else None


def _worker() -> str:
    return _other_test().WORKER


def _other_test():  # the sibling test module: its worker and configurations
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_checkpoint_crossbackend
    return test_checkpoint_crossbackend


CONFIGS = _other_test().CONFIGS


def _run(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)


def tour_lines(text: str) -> list[str]:
    """The tour's lines that must agree across backends (not the backend's name nor P12)."""
    return [line for line in text.splitlines()
            if not line.startswith("backend:") and "own default" not in line]


def record(folder: Path, python: str = sys.executable) -> None:
    """Write the MXNet side into ``folder`` (run with the mxnet venv's interpreter)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitignore").write_text("*\n")
    steps = {
        "recording": ["-m", "unifparam.conformance.crossbackend", "record", "--backend",
                      "mxnet", "--out", str(folder / "mxnet.npz")],
        "tour": ["-m", "unifparam", "tour", "--backend", "mxnet"],
        "checkpoints": ["-c", _worker(), "save", "mxnet", str(folder / "mxnet-checkpoints")],
        "tutorials": [str(ROOT / "docs" / "_hooks" / "tutorials.py"), "run", "mxnet",
                      *map(str, TUTORIALS)],
    }
    for what, args in steps.items():
        proc = _run(python, *args)
        if proc.returncode:
            raise RuntimeError(f"mxnet {what} failed:\n{proc.stderr[-5000:]}")
        if what == "tour":
            (folder / "mxnet-tour.txt").write_text(proc.stdout)
        if what == "tutorials":
            (folder / "mxnet-tutorials.json").write_text(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def mxnet_side(tmp_path_factory) -> Path:
    """A folder with the MXNet side: recorded now if the mxnet venv exists, else nox's."""
    python = mxnet_python()
    if python is not None:
        folder = tmp_path_factory.mktemp("mxnet-side")
        record(folder, python)
        return folder
    if not (RECORDS / "mxnet.npz").exists():
        pytest.skip(f"no MXNet recording in {RECORDS}: {HOW}")
    return RECORDS


def test_mxnet_recording_agrees_with_torch(mxnet_side, tmp_path):
    path = tmp_path / "torch.npz"
    proc = _run(sys.executable, "-m", "unifparam.conformance.crossbackend", "record",
                "--backend", "torch", "--out", str(path))
    assert proc.returncode == 0, proc.stderr[-5000:]
    torch_side = crossbackend.load(str(path))
    mxnet = crossbackend.load(str(mxnet_side / "mxnet.npz"))
    problems = crossbackend.compare(torch_side, mxnet)
    # MXNet 1.9's NDArrays have no 0-d form: a full reduction (FancyMLP's sum) has shape
    # (1,) there (docs/blocks.md). That one difference is allowed; its value must agree.
    scalar = "torch vs mxnet: block_fancy_mlp/output shapes () vs (1,)"
    if scalar in problems:
        problems.remove(scalar)
        want, got = torch_side[1]["block_fancy_mlp/output"], mxnet[1]["block_fancy_mlp/output"]
        np.testing.assert_allclose(got.reshape(()), want, rtol=1e-5, atol=1e-5)
    assert not problems, "\n".join(problems)


def test_mxnet_tour_prints_the_same_text_as_torch(mxnet_side):
    proc = _run(sys.executable, "-m", "unifparam", "tour", "--backend", "torch")
    assert proc.returncode == 0, proc.stderr[-5000:]
    mxnet_text = (mxnet_side / "mxnet-tour.txt").read_text()
    assert "mxnet's own default" in mxnet_text
    assert tour_lines(mxnet_text) == tour_lines(proc.stdout)


def _tutorials():  # the site's runner (docs/_hooks/tutorials.py), as tests/test_tutorials.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_tutorials
    return test_tutorials.tutorials


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_mxnet_tutorials_show_what_torch_shows(mxnet_side, page):
    """Every tutorial cell's output on MXNet equals torch's (but the frameworks' own
    defaults). A figure must be there on both, but its PNG bytes are not compared: the
    mxnet venv's matplotlib is older (numpy < 1.24) and draws text a few pixels apart; the
    values plotted are those the cells print."""
    runner = _tutorials()
    mxnet = json.loads((mxnet_side / "mxnet-tutorials.json").read_text())[page.name]
    torch = runner.run(TUTORIALS, "torch")[page.name]
    assert len(mxnet) == len(torch) == len(runner.cells(page.read_text()))
    same = {"torch": _without_png_bytes(torch), "mxnet": _without_png_bytes(mxnet)}
    assert runner.disagreements(page, same) == []
    assert sum(bool(out) for out in mxnet) >= len(mxnet) * 2 // 3


def _without_png_bytes(outputs: list[list[dict]]) -> list[list[dict]]:
    return [[{**o, "data": "(png)"} if o["kind"] == "png" else o for o in cell]
            for cell in outputs]


def _load(python: str, loader: str, *saved: Path) -> list[str]:
    proc = _run(python, "-c", _worker(), "load", loader, "-", *map(str, saved))
    assert proc.returncode == 0, f"{loader} could not load:\n{proc.stderr[-5000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == sum(len(list(f.glob("*.safetensors"))) for f in saved) > 0
    return [f"saved in {r['saver']}, case {r['case']}: {r['problem']}" for r in results
            if r["problem"]]


@pytest.mark.parametrize("loader", CONFIGS)
def test_checkpoints_saved_on_mxnet_load_on_every_configuration(mxnet_side, loader):
    problems = _load(sys.executable, loader, mxnet_side / "mxnet-checkpoints")
    assert not problems, "\n".join(problems)


def test_checkpoints_saved_on_every_configuration_load_on_mxnet(tmp_path):
    python = mxnet_python()
    if python is None:
        pytest.skip(f"loading on MXNet needs the mxnet venv's interpreter: {HOW}")
    folders = []
    for config in CONFIGS:
        folder = tmp_path / config.replace(":", "-")
        proc = _run(sys.executable, "-c", _worker(), "save", config, str(folder))
        assert proc.returncode == 0, f"{config} could not save:\n{proc.stderr[-5000:]}"
        folders.append(folder)
    problems = _load(python, "mxnet", *folders)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":  # the mxnet session: python tests/test_crossbackend_mxnet.py record DIR
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_crossbackend_mxnet.py record FOLDER")
    record(Path(sys.argv[2]).resolve())
