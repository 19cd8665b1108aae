"""The unifparam command: backends, tour, conformance (on torch here; all backends in CI)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unifparam import _cli
from unifparam._cli import main
from unifparam._install import command


def test_backends_lists_torch_with_its_version(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"torch\s+│ yes\s+│ torch\s+│ 2\.", out)


def test_tour_walks_every_scenario_in_the_chapters_order_with_its_code(capsys):
    assert main(["tour", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    shown = re.findall(r"^== ([PL]\d+) ", out, re.M)
    assert shown == [f"P{i}" for i in range(1, 15)] + [f"L{i}" for i in range(1, 14)]
    assert "Init 0.weight (256, 20)\nInit 1.weight (10, 256)" in out
    # each scenario: its title, the code that ran (as a transcript), then what it printed
    for section in out.split("\n== ")[1:]:
        title, *lines = section.splitlines()
        code = lines[:lines.index("--")]
        assert code and code[0].startswith(">>> "), title
        assert all(line.startswith((">>> ", "...")) for line in code), title
    p11 = out.split("== P11 ")[1].split("\n== ")[0]
    assert ">>> tie(ae, \"0.weight\", \"1.weight\", transpose=True)" in p11
    assert "--\n[ True  True  True  True  True  True  True  True]\n" in p11  # then its output
    ending = out.rstrip().rsplit("\n\n", 1)[1]
    assert "unifparam tour --backend keras:jax" in ending
    assert "UNIFPARAM_BACKEND=keras:jax python3 -m nox -s tour" in ending


def test_conformance_matrix_on_torch(tmp_path, capsys):
    out_file = tmp_path / "m.json"
    assert main(["conformance", "--backend", "torch", "--json", str(out_file)]) == 0
    data = json.loads(out_file.read_text())
    ids = {f"P{i}" for i in range(1, 15)} | {f"L{i}" for i in range(1, 14)}
    assert ids <= set(data["matrix"]), sorted(ids - set(data["matrix"]))
    assert all(cells["torch"] == "pass" for cells in data["matrix"].values())
    assert re.search(r"^conformance: \d+ passed, 0 failed", capsys.readouterr().out, re.M)


def test_errors_are_reported_without_a_traceback(capsys):
    assert main(["tour", "--backend", "nosuch"]) == 2
    assert "Unknown backend 'nosuch'" in capsys.readouterr().err


BLOCK_PYTEST = '''
import importlib.abc, sys

class _NoPytest(importlib.abc.MetaPathFinder):
    """Behaves as if pytest were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoPytest())
'''


def test_conformance_without_pytest_says_how_to_install_it(tmp_path, python):
    # sitecustomize runs in the command's process and in any interpreter it starts
    (tmp_path / "sitecustomize.py").write_text(BLOCK_PYTEST)
    proc = python("import sys; from unifparam._cli import main; "
                  "sys.exit(main(['conformance', '--backend', 'torch']))",
                  env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "pip install -e '.[test]'" in proc.stderr  # run from the clone's root
    assert "suite did not run" not in proc.stdout + proc.stderr


def _fake_backend(monkeypatch):
    from unifparam import BackendInfo, _registry
    fake = BackendInfo(name="mxnet", requires=("unifparam_no_such_framework",),
                       distribution="mxnet", native_types=(),
                       install="pip install 'unifparam[mxnet]' (Python <= 3.11)",
                       loader="unifparam_mxnet:MXNetBackend")
    known = {**_registry.registered(), "mxnet": fake}
    monkeypatch.setattr(_registry, "registered", lambda: known)


def test_conformance_on_a_backend_not_installed_prints_its_install_hint(monkeypatch, capsys):
    _fake_backend(monkeypatch)
    assert main(["conformance", "--backend", "mxnet"]) != 0
    captured = capsys.readouterr()
    assert command("mxnet") in captured.err
    assert "INTERNALERROR" not in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("columns", ["80", "40", "200"])
def test_backends_prints_the_whole_install_command_at_any_width(monkeypatch, capsys,
                                                                 columns):
    monkeypatch.setenv("COLUMNS", columns)  # a pipe gets 80 columns: as in a CI log
    _fake_backend(monkeypatch)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    hint = command("mxnet")
    assert hint.startswith("pip install -e ") and hint.endswith("[mxnet]'")
    assert re.search(rf"^  mxnet: {re.escape(hint)} \(Python <= 3\.11\)$", out, re.M), out


def test_tour_names_the_keras_backend_in_use(python):
    proc = python("from unifparam._cli import main; main(['tour'])",
                  env={"UNIFPARAM_BACKEND": "keras", "KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "backend: keras:jax"


def test_help_is_plain_text_and_describes_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    inspect_help = capsys.readouterr().out
    assert "``" not in top and ":func:" not in top
    assert "unifparam backends" in top and "examples:" in top
    assert re.search(r"^\s+file\s+a \.safetensors file", inspect_help, re.M), inspect_help


def test_inspect_into_a_closed_pipe_stops_quietly(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "many.safetensors"  # its summary is larger than a pipe's buffer
    safetensors.save_file({f"t{i}": np.zeros(2, np.float32) for i in range(8000)}, str(path))
    proc = subprocess.run(["bash", "-c", f'"{sys.executable}" -m unifparam inspect "{path}" | '
                                         f"head -n 2"], capture_output=True, text=True)
    assert proc.stdout.startswith("Checkpoint: ")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_inspect_of_a_file_that_is_not_safetensors_says_so(capsys):
    readme = Path(__file__).parents[1] / "README.md"
    assert main(["inspect", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "not a safetensors file" in err and "claims" not in err, err


def _fake_matrix(monkeypatch, configs: list[tuple[str, bool]]) -> None:
    """conformance --backend all over ``configs`` without running any suite."""
    monkeypatch.setattr(_cli, "every_configuration", lambda: configs)
    monkeypatch.setattr(_cli, "preflight", lambda backend: None)
    monkeypatch.setattr(_cli, "run_suite", lambda backend: {
        "backend": backend, "returncode": 0,
        "results": [{"scenario": s, "outcome": "passed"} for s in ("P1", "P2", "L1")]})


def test_conformance_all_names_the_configurations_it_skipped(monkeypatch, capsys):
    _fake_matrix(monkeypatch, [("torch", True), ("keras:tensorflow", False),
                               ("flax", True), ("mxnet", False)])
    assert main(["conformance", "--backend", "all"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^skipped, not installed: keras:tensorflow, mxnet ", out, re.M), out
    main(["conformance", "--backend", "torch"])
    assert "skipped" not in capsys.readouterr().out  # one backend asked for, none skipped


def test_conformance_matrix_keeps_whole_headers_in_a_narrow_log(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # CI's log: not a terminal
    configs = ["torch", "keras:tensorflow", "keras:jax", "keras:torch", "flax:linen",
               "flax:nnx", "mxnet"]
    _fake_matrix(monkeypatch, [(c, True) for c in configs])
    assert main(["conformance", "--backend", "all"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if "scenario" in line)
    assert re.findall(r"[\w:]+", header) == ["scenario", *configs], header
