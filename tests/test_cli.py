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
