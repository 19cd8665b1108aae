"""One model used from several threads: verbs serialize, so every forward output, gradient and
saved file equals one of the model's consistent states (seed A or seed B), never a mix.

Bounded iterations, no timing: a thread's result is compared with the two states after all
threads have joined.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import unifparam as up
from unifparam import nn

safetensors_numpy = pytest.importorskip("safetensors.numpy")

CONFIGS = ["torch", "flax:linen", "flax:nnx", f"keras:{os.environ.get('KERAS_BACKEND', 'jax')}",
           "mxnet"]
ROUNDS = 24


def _build(config: str) -> up.Model:
    try:
        return up.build(nn.Sequential(nn.Dense(64, activation="relu"),
                                      nn.Dense(64, activation="relu"), nn.Dense(3)),
                        backend=config)
    except (up.BackendNotInstalledError, up.BackendConflictError, up.BackendNotFoundError) as e:
        pytest.skip(f"{config}: {e}")


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def _which(value: dict[str, np.ndarray], states: list[dict[str, np.ndarray]]) -> list[int]:
    return [i for i, s in enumerate(states) if _same(value, s)]


@pytest.mark.parametrize("config", CONFIGS)
def test_verbs_on_one_model_from_several_threads_see_only_consistent_states(config, tmp_path):
    net = _build(config)
    x = np.random.default_rng(0).random((4, 16), dtype=np.float32)
    outs, values, grads = [], [], []
    for seed in (1, 2):
        up.initialize(net, seed=seed, force_reinit=True)
        outs.append({"y": net.to_numpy(net(x)).copy()})
        values.append({k: p.numpy() for k, p in up.params(net).items()})
        grads.append(up.gradients(net, x))
    assert not _same(outs[0], outs[1])
    file_a = str(tmp_path / "a.safetensors")
    up.initialize(net, seed=1, force_reinit=True)
    up.save(net, file_a)

    seen: dict[str, list] = {"forward": [], "gradients": [], "save": [], "numpy": []}
    failures: list[BaseException] = []
    start = threading.Barrier(5)

    def worker(fn):
        def run():
            try:
                start.wait()
                for i in range(ROUNDS):
                    fn(i)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                failures.append(e)
        return threading.Thread(target=run)

    def write(i):  # alternates the two states by two different verbs
        if i % 2:
            up.load(net, file_a)
        else:
            up.initialize(net, seed=2, force_reinit=True)

    def save(i):
        path = str(tmp_path / f"{i}.safetensors")
        up.save(net, path)
        seen["save"].append(safetensors_numpy.load_file(path))

    threads = [worker(write),
               worker(lambda i: seen["forward"].append({"y": net.to_numpy(net(x)).copy()})),
               worker(lambda i: seen["gradients"].append(up.gradients(net, x))),
               worker(save),
               worker(lambda i: seen["numpy"].append({"0.weight": net[0].weight.numpy()}))]
    _run_interleaved(threads)
    assert not failures, f"{config}: a verb raised under threads: {failures[0]!r}"
    refs = {"forward": outs, "gradients": grads, "save": values,
            "numpy": [{"0.weight": v["0.weight"]} for v in values]}
    for what, results in seen.items():
        assert len(results) == ROUNDS
        mixed = [i for i, r in enumerate(results) if not _which(r, refs[what])]
        assert not mixed, (f"{config}: {len(mixed)} of {ROUNDS} {what} results match neither "
                           f"seed's state (first at round {mixed[0]})")


def _run_interleaved(threads):
    """Start and join ``threads``, switching between them often (every 10 us) so that
    interleavings inside a verb happen: at the default interval torch passed unlocked."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("config", CONFIGS)
def test_element_writes_from_several_threads_are_never_lost(config):
    """``p[i] = v`` reads, changes and writes back the whole parameter: without the lock, one
    thread's write of row 0 could be undone by another's write of row 1."""
    net = _build(config)
    net(np.ones((2, 16), np.float32))
    w = net[0].weight
    rows = 4
    start = threading.Barrier(rows)

    def writer(row):
        def run():
            start.wait()
            for i in range(1, ROUNDS + 1):
                w[row] = float(i)
        return threading.Thread(target=run)

    threads = [writer(r) for r in range(rows)]
    _run_interleaved(threads)
    np.testing.assert_array_equal(w.numpy()[:rows], np.full((rows, 16), float(ROUNDS)))


def test_verbs_run_inside_a_verb_of_the_same_model():
    """The lock is re-entrant: a loss run by gradients may read the model's parameters."""
    net = _build("torch")
    x = np.ones((2, 16), np.float32)
    net(x)
    read = []

    def loss(y):
        read.append(net[0].weight.numpy().shape)
        return (y ** 2).sum()

    up.gradients(net, x, loss=loss)
    assert read == [(64, 16)]
