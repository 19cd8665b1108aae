"""Cross-backend agreement: each backend records canonical results in its own process,
then a comparison asserts they agree (DESIGN.md §5).

    python -m unifparam.conformance.crossbackend record --backend torch --out torch.npz
    python -m unifparam.conformance.crossbackend compare torch.npz keras-jax.npz

Recorded per case: names, shapes, aliases, summary texts (before and after
materialization), seeded values (must be bit-identical), outputs on fixed inputs and
gradients (float32 tolerance). Cases built in bfloat16 and float16 (``case@dtype``)
record their seeded values as bits (bit-identical too) and outputs (their dtype's
tolerance); a dtype a backend cannot store is recorded as unsupported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import init, nn
from ._helpers import FancyMLP, MyDense, TwoInputs, inputs, rgnet

# float32 tolerance; the absolute part scales with the array's largest magnitude, since
# rounding errors of float32 sums grow with the values summed (an output of 15 carries ~1e-5)
RTOL, ATOL = 1e-5, 1e-6
#: dtypes whose seeded values every backend must agree on bit for bit, and the tolerance of
#: outputs computed in them (a few units of their last place, accumulated differently)
PRECISIONS = {"bfloat16": 4e-2, "float16": 5e-3}


def _tie_decoder(net: Any) -> None:
    from .._verbs import tie
    tie(net, "0.weight", "3.weight", transpose=True)


def cases() -> dict[str, tuple[nn.Layer, Any, int, list[np.ndarray], Callable | None]]:
    """name -> (spec, initializer, seed, inputs, setup)."""
    shared = nn.Dense(8, activation="tanh")
    conv = nn.Sequential(nn.Conv2D(4, 3, padding=1, activation="relu"), nn.Conv2D(6, 3, stride=2),
                         nn.Flatten(), nn.Dense(5))
    norms = nn.Sequential(nn.Dense(16), nn.BatchNorm(), nn.Activation("relu"), nn.Dense(8),
                          nn.LayerNorm(), nn.Dense(4, activation="sigmoid"))
    autoenc = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3, activation="relu"),
                            nn.Dense(8, activation="gelu"), nn.Dense(4))
    tokens = np.array([[1, 2, 3, 9], [0, 5, 5, 7]], dtype=np.int64)
    return {
        "mlp": (nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)), init.XavierUniform(),
                0, [inputs(2, 4)], None),
        "lazy_default_seeded": (nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10)),
                                None, 1, [inputs(2, 20)], None),
        "rgnet": (rgnet(), init.Normal(std=0.5), 2, [inputs(2, 4)], None),
        "conv": (conv, init.KaimingUniform(), 3, [inputs(2, 3, 8, 8)], None),
        "norms": (norms, init.XavierNormal(), 4, [inputs(3, 6)], None),
        "shared": (nn.Sequential(nn.Dense(8, activation="tanh"), shared, shared, nn.Dense(1)),
                   init.TruncatedNormal(std=0.5), 5, [inputs(2, 4)], None),
        "autoencoder_transposed_tie": (autoenc, init.Orthogonal(), 6, [inputs(2, 4)],
                                       _tie_decoder),
        "embedding": (nn.Sequential(nn.Embedding(10, 4), nn.Dense(10)), init.Uniform(-0.5, 0.5),
                      7, [tokens], None),
        **block_cases(),
    }


def block_cases() -> dict[str, tuple[nn.Layer, Any, int, list[np.ndarray], Callable | None]]:
    """Custom blocks (B1-B4). Every configuration here builds them; a new backend that
    cannot yet records them as unsupported (``record``), and comparisons skip them."""
    named = nn.Sequential({"hidden": MyDense(6), "out": nn.Dense(2)})
    return {
        "block_fancy_mlp": (FancyMLP(), init.Normal(std=0.5), 8, [inputs(2, 20)], None),
        "block_named_my_dense": (named, init.XavierUniform(), 9, [inputs(3, 5)], None),
        "block_two_inputs": (TwoInputs(), init.Normal(std=0.5), 10,
                             [inputs(3, 4), inputs(3, 6, seed=1)], None),
    }


def precision_cases() -> dict[str, tuple[nn.Layer, Any, int, list[np.ndarray], Callable | None]]:
    """The cases that run in every dtype of :data:`PRECISIONS` (``name@dtype``)."""
    every = cases()
    return {f"{name}@{dtype}": every[name] for dtype in PRECISIONS
            for name in ("mlp", "conv", "norms", "shared", "autoencoder_transposed_tie",
                         "embedding")}


def _bits(value: np.ndarray) -> np.ndarray:
    """A bfloat16/float16 array as unsigned ints of its width (npz keeps those exactly)."""
    return value.view(np.dtype(f"u{value.dtype.itemsize}"))


def record_precision(backend: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Run every precision case on ``backend`` into ``meta``/``arrays``."""
    import unifparam as up
    for name, (spec, initializer, seed, xs, setup) in precision_cases().items():
        dtype = name.split("@")[1]
        try:
            net = up.build(spec, backend=backend, dtype=dtype)
        except up.UnsupportedError as e:  # MXNet and bfloat16
            meta["cases"][name] = {"unsupported": str(e)}
            continue
        if setup:
            setup(net)
        up.initialize(net, initializer, seed=seed)
        up.materialize(net, *xs)
        listed = up.params(net)
        meta["cases"][name] = {
            "params": [[n, list(p.shape), p.dtype, list(p.aliases), p.trainable]
                       for n, p in listed.items()]}
        for n, p in listed.items():
            arrays[f"{name}/value/{n}"] = _bits(p.numpy())
        try:
            arrays[f"{name}/output"] = np.asarray(up.to_numpy(net(*xs)), np.float32)
        except up.UnsupportedError as e:  # MXNet's CPU operators without float16 kernels
            meta["cases"][name]["no_output"] = str(e)


def record(backend: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run every case on ``backend``: JSON-able metadata and arrays."""
    import unifparam as up
    meta: dict[str, Any] = {"backend": backend, "cases": {}}
    arrays: dict[str, np.ndarray] = {}
    record_precision(backend, meta, arrays)
    for name, (spec, initializer, seed, xs, setup) in cases().items():
        try:
            net = up.build(spec, backend=backend)
        except up.UnsupportedError as e:  # a block on an adapter that cannot build one yet
            meta["cases"][name] = {"unsupported": str(e)}
            continue
        if setup:
            setup(net)
        before = str(up.summary(net))
        up.initialize(net, initializer, seed=seed)
        out = net.to_numpy(net(*xs))
        listed = up.params(net)
        meta["cases"][name] = {
            "summary_before": before, "summary_after": str(up.summary(net)),
            "params": [[n, list(p.shape), p.dtype, list(p.aliases), p.trainable]
                       for n, p in listed.items()]}
        for n, p in listed.items():
            arrays[f"{name}/value/{n}"] = p.numpy()
        arrays[f"{name}/output"] = out
        for n, g in up.gradients(net, *xs).items():
            arrays[f"{name}/grad/{n}"] = g
    return meta, arrays


def save(path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


def load(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path) as data:
        return json.loads(str(data["__meta__"])), {k: data[k] for k in data.files
                                                   if k != "__meta__"}


def compare(a: tuple[dict, dict], b: tuple[dict, dict]) -> list[str]:
    """Differences between two recordings (empty when they agree)."""
    (ma, xa), (mb, xb) = a, b
    who = f"{ma['backend']} vs {mb['backend']}"
    problems = []
    for case, ca in ma["cases"].items():
        cb = mb["cases"].get(case)
        if cb is None:
            problems.append(f"{who}: case {case} missing")
            continue
        if "unsupported" in ca or "unsupported" in cb:  # listed by the conformance suite
            continue                                    # as an expected failure instead
        for key in ("params", "summary_before", "summary_after"):
            if key in ca and ca[key] != cb[key]:
                problems.append(f"{who}: {case} {key} differs:\n{ca[key]}\n---\n{cb[key]}")
    unsupported = {c for m in (ma, mb) for c, v in m["cases"].items() if "unsupported" in v}
    no_output = {f"{c}/output" for m in (ma, mb) for c, v in m["cases"].items()
                 if "no_output" in v}
    for key in sorted(set(xa) | set(xb)):
        if key.split("/", 1)[0] in unsupported or key in no_output:
            continue
        if key not in xa or key not in xb:
            problems.append(f"{who}: {key} recorded by one only")
            continue
        u, v = xa[key], xb[key]
        if u.shape != v.shape:
            problems.append(f"{who}: {key} shapes {u.shape} vs {v.shape}")
        elif "/value/" in key:
            if not np.array_equal(u, v):
                problems.append(f"{who}: {key} seeded values not bit-identical "
                                f"({int((u != v).sum())} of {u.size} differ)")
        elif "@" in key.split("/", 1)[0]:
            tol = PRECISIONS[key.split("/", 1)[0].split("@")[1]]
            if not np.allclose(u, v, rtol=tol, atol=tol * max(1.0, float(np.abs(u).max(
                    initial=0.0)))):
                problems.append(f"{who}: {key} differs beyond its dtype's tolerance "
                                f"(max diff {np.abs(u - v).max():.3g})")
        elif not np.allclose(u, v, rtol=RTOL * 10 if "/grad/" in key else RTOL,
                             atol=ATOL * max(1.0, float(np.abs(u).max(initial=0.0)))):
            problems.append(f"{who}: {key} differs beyond float32 tolerance "
                            f"(max diff {np.abs(u - v).max():.3g})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unifparam.conformance.crossbackend")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--backend", required=True)
    rec.add_argument("--out", required=True)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "record":
        save(args.out, *record(args.backend))
        return 0
    recs = [load(f) for f in args.files]
    problems = [p for r in recs[1:] for p in compare(recs[0], r)]
    print("\n".join(problems) or f"agree: {', '.join(r[0]['backend'] for r in recs)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
