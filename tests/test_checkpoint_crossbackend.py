"""Checkpoints across backends: save on each installed configuration, load on every one.

Each configuration runs in its own process (Keras fixes its backend per process). A saver
writes one file per cross-backend case (``unifparam.conformance.crossbackend.cases``) plus
its outputs, listing and summary; a loader builds each spec fresh (shapes unknown), loads
the file with no example input and must reproduce outputs, names, ties and summary. Every
configuration builds every case, custom blocks included: a build error is a failure.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import unifparam

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["torch", "keras:tensorflow", "keras:jax", "keras:torch", "flax", "flax:nnx"]


def configurations() -> list[str]:
    """The configurations whose adapter is registered and whose frameworks are installed."""
    found = []
    for name in ORDER:
        base, _, variant = name.partition(":")
        info = unifparam.backends().get(base)
        if info is None or not info.installed():
            continue
        if variant and not info.variant_installed(variant):
            continue
        found.append(name)
    return found


CONFIGS = configurations()

WORKER = r'''
import json, sys
from pathlib import Path
import numpy as np
import unifparam as up
from unifparam.conformance.crossbackend import cases

mode, backend, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
capable = up.get_backend(backend).capabilities

def listing(net):
    return [[n, list(p.shape), list(p.aliases)] for n, p in up.params(net).items()]

if mode == "save":
    folder.mkdir(parents=True, exist_ok=True)
    for case, (spec, initializer, seed, xs, setup) in cases().items():
        if setup is not None and "transpose_tie" not in capable:
            continue
        net = up.build(spec, backend=backend)  # every configuration builds every case
        if setup:
            setup(net)
        up.initialize(net, initializer, seed=seed)
        net(*xs, training=True)  # batch statistics move away from their defaults
        np.save(folder / f"{case}.npy", net.to_numpy(net(*xs)))
        up.save(net, folder / f"{case}.safetensors")
        (folder / f"{case}.json").write_text(json.dumps(
            {"listing": listing(net), "summary": str(up.summary(net))}))
    sys.exit(0)

results = []
for saved in sys.argv[4:]:
    src = Path(saved)
    for case, (spec, initializer, seed, xs, setup) in cases().items():
        path = src / f"{case}.safetensors"
        if not path.exists() or (setup is not None and "transpose_tie" not in capable):
            continue
        problem = None
        try:
            net = up.build(spec, backend=backend)
            up.load(net, path)  # shapes unknown: materialized from the file, no input
            want = json.loads((src / f"{case}.json").read_text())
            got = net.to_numpy(net(*xs))
            ref = np.load(src / f"{case}.npy")
            if got.size == ref.size == 1 and {got.ndim, ref.ndim} == {0, 1}:
                got = got.reshape(ref.shape)  # a scalar: MXNet 1.9's NDArrays have no 0-d form
            if listing(net) != want["listing"]:
                problem = f"listing {listing(net)} != {want['listing']}"
            elif str(up.summary(net)) != want["summary"]:
                problem = f"summary differs:\n{up.summary(net)}\n---\n{want['summary']}"
            elif got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-5, atol=1e-5):
                problem = f"outputs differ (max {np.abs(got - ref).max():.3g})"
            else:
                for name, p in up.params(net).items():
                    for alias in p.aliases:  # ties are one live storage, not copies
                        layer, local = alias.rsplit(".", 1) if "." in alias else ("", alias)
                        view = getattr(net[layer] if layer else net, local)
                        corner = (0,) * len(p.shape)
                        view[corner] = 123.0
                        if p[corner] != 123.0:
                            problem = f"{alias} does not follow {name} after load"
        except Exception as e:  # reported per pair, so one failure does not hide the others
            problem = f"{type(e).__name__}: {e}"
        results.append({"saver": src.name, "case": case, "problem": problem})
print(json.dumps(results))
'''


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WORKER, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Configuration -> folder of files it saved."""
    base = tmp_path_factory.mktemp("xb-ckpt")
    folders = {}
    for config in CONFIGS:
        folder = base / config.replace(":", "-")
        proc = _run("save", config, str(folder))
        assert proc.returncode == 0, f"{config} could not save:\n{proc.stderr[-5000:]}"
        folders[config] = folder
    return folders


@pytest.mark.parametrize("loader", CONFIGS)
def test_every_saved_file_loads_and_agrees(loader, saved):
    proc = _run("load", loader, "-", *(str(f) for f in saved.values()))
    assert proc.returncode == 0, f"{loader} could not load:\n{proc.stderr[-5000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {f.name: c for c, f in saved.items()}
    problems = [f"saved on {names[r['saver']]}, loaded on {loader}, case {r['case']}: "
                f"{r['problem']}" for r in results if r["problem"]]
    assert not problems, "\n".join(problems)
    assert {names[r["saver"]] for r in results} == set(saved)


def test_configurations_run_include_torch():
    assert "torch" in CONFIGS
