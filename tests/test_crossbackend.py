"""Cross-backend agreement (DESIGN.md §5): every backend configuration, each in its own
process, records canonical results; each must agree with torch's recording."""

import os
import subprocess
import sys

import pytest

from unifparam._cli import configurations
from unifparam.conformance import crossbackend

CONFIGS = configurations("all")


def _record(backend: str, out: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "unifparam.conformance.crossbackend", "record",
                           "--backend", backend, "--out", out], capture_output=True, text=True)
    assert proc.returncode == 0, f"{backend} failed to record:\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("xb") / "reference-torch.npz")
    _record("torch", path)
    return crossbackend.load(path)


@pytest.mark.parametrize("config", CONFIGS)
def test_recordings_agree_with_torch(config, reference, tmp_path):
    path = str(tmp_path / f"{config.replace(':', '-')}.npz")
    _record(config, path)
    recording = crossbackend.load(path)
    refused = {c: v["unsupported"] for c, v in recording[0]["cases"].items()
               if "unsupported" in v}
    assert not refused, f"{config} cannot build: {refused}"  # every case, blocks included
    problems = crossbackend.compare(reference, recording)
    assert not problems, "\n".join(problems)


def _tour(backend: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "unifparam", "tour", "--backend", backend],
                          capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-5000:]
    return [line for line in proc.stdout.splitlines()
            if not line.startswith("backend:") and "own default" not in line]


@pytest.mark.parametrize("config", [c for c in CONFIGS if c != "torch"])
def test_tour_prints_the_same_text_as_on_torch(config):
    assert _tour(config) == _tour("torch")


def test_configurations_include_every_installed_backend():
    assert "torch" in CONFIGS
