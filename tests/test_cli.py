"""The unifparam command: backends, tour, conformance (on torch here; all backends in CI)."""

import json
import re

from unifparam._cli import main


def test_backends_lists_torch_with_its_version(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"torch\s+│ yes\s+│ torch\s+│ 2\.", out)


def test_tour_walks_every_scenario(capsys):
    assert main(["tour", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    shown = set(re.findall(r"^== ([PL]\d+) ", out, re.M))
    assert shown >= {f"P{i}" for i in range(1, 15)} - {"P12"} | {"P12"}
    assert shown >= {f"L{i}" for i in range(1, 14)} - {"L7"} | {"L7"}
    assert "Init 0.weight (256, 20)\nInit 1.weight (10, 256)" in out


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
    assert "pip install 'unifparam[test]'" in proc.stderr
    assert "suite did not run" not in proc.stdout + proc.stderr


def _fake_backend(monkeypatch):
    from unifparam import BackendInfo, _registry
    fake = BackendInfo(name="mxnet", requires=("unifparam_no_such_framework",),
                       distribution="mxnet", native_types=(),
                       install="pip install 'unifparam[mxnet]'",
                       loader="unifparam_mxnet:MXNetBackend")
    known = {**_registry.registered(), "mxnet": fake}
    monkeypatch.setattr(_registry, "registered", lambda: known)


def test_conformance_on_a_backend_not_installed_prints_its_install_hint(monkeypatch, capsys):
    _fake_backend(monkeypatch)
    assert main(["conformance", "--backend", "mxnet"]) != 0
    captured = capsys.readouterr()
    assert "pip install 'unifparam[mxnet]'" in captured.err
    assert "INTERNALERROR" not in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


def test_backends_prints_install_extras_verbatim(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    _fake_backend(monkeypatch)
    assert main(["backends"]) == 0
    assert "pip install 'unifparam[mxnet]'" in capsys.readouterr().out


def test_tour_names_the_keras_backend_in_use(python):
    proc = python("from unifparam._cli import main; main(['tour'])",
                  env={"UNIFPARAM_BACKEND": "keras", "KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "backend: keras:jax"
