"""``unifparam tour``: the two chapters' scenarios, written once, run on the chosen backend.

Each scenario prints its code (read from this file), then its output, in the chapters'
order (P1-P14, then L1-L13), and the tour ends with how to run it on another backend.
Everything is seeded, so the printed text is the same on every backend except the one
line that names the backend (and P12, which is about each framework's own default).
"""

from __future__ import annotations

import ast
import sys
import textwrap
from functools import cache
from pathlib import Path
from types import TracebackType

import numpy as np

from . import init, nn
from ._model import Model
from ._summary import summary
from ._verbs import build, gradients, initialize, materialize, params, tie
from .errors import DeferredParameterError, InputShapeError


def rounded(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=True, floatmode="fixed")


NEXT = """
Next: the same tour on another backend, e.g. keras:jax (also torch, keras:tensorflow,
keras:torch, flax, flax:nnx, mxnet):
    unifparam tour --backend keras:jax
    UNIFPARAM_BACKEND=keras:jax python3 -m nox -s tour     (from a clone: installs what it needs)
`unifparam backends` lists what is installed here and how to install the rest."""


@cache
def _code() -> dict[int, str]:
    """Line of each ``with _section(...)`` in this file -> its body as a REPL transcript."""
    source = Path(__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        call = node.items[0].context_expr if isinstance(node, ast.With) else None
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "_section":
            shown = []
            for stmt in node.body:
                first = stmt.decorator_list[0].lineno if getattr(stmt, "decorator_list",
                                                                 None) else stmt.lineno
                text = textwrap.dedent("\n".join(lines[first - 1:stmt.end_lineno]))
                shown += [("... " if i else ">>> ") + t if t else "..."
                          for i, t in enumerate(text.splitlines())]
            out[node.lineno] = "\n".join(shown)
    return out


class _section:  # noqa: N801 (reads as a statement: with _section("P1 ..."):)
    """Prints the scenario's title and the code of the ``with`` block, before it runs."""

    def __init__(self, title: str) -> None:
        self.title, self.line = title, sys._getframe(1).f_lineno  # the `with` line

    def __enter__(self) -> None:
        print(f"\n== {self.title} ==")
        print(_code()[self.line])
        print("--")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


def inputs(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


class MyInit(init.Initializer):
    """P9's initializer: U(5, 10) or U(-10, -5) or 0; reports each weight it fills."""

    def sample(self, target: init.Target, rng: np.random.Generator) -> np.ndarray:
        print("Init", target.name, target.shape)
        data = rng.uniform(-10, 10, target.shape)
        return data * (np.abs(data) >= 5)


def run(backend: str | None = None) -> None:
    """Print the tour of P1-P14 and L1-L13 on ``backend`` (default: UNIFPARAM_BACKEND)."""
    from ._registry import get_backend
    print(f"backend: {get_backend(backend).configuration}")
    with _section("P1 A small MLP"):
        net = build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)), backend=backend)
        initialize(net, init.Uniform(-0.07, 0.07), seed=0)
        X = inputs(2, 4)
        print(net)
        print("output shape:", tuple(net.to_numpy(net(X)).shape))
        print("output:", rounded(net.to_numpy(net(X))))
    with _section("P2 One layer's parameters by index"):
        for name, p in params(net[1]).items():
            print(name, repr(p))
    with _section("P3 One parameter, in depth"):
        bias = net[1].bias
        print(repr(bias), "value", rounded(bias.numpy()), "grad", bias.grad)
        gradients(net, X)
        print("after gradients(net, X): grad", rounded(bias.grad))
    with _section("P4 All parameters at once"):
        print(*[(n, p.shape) for n, p in params(net[0]).items()])
        print(*[(n, p.shape) for n, p in params(net).items()])
        print("as a list of arrays:", [a.shape for a in (p.numpy() for p in params(net).values())])
    with _section("P5 Access by name"):
        print("params(net)['1.bias'] =", rounded(params(net)["1.bias"].numpy()))
    _nested(backend, X)
    _initializers(net)
    _ties(backend)
    _defaults(backend, X)
    _lazy(backend)
    print(NEXT)


def _nested(backend: str | None, X: np.ndarray) -> None:
    def block1() -> nn.Sequential:
        return nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(16, activation="relu"))

    def block2() -> nn.Sequential:
        return nn.Sequential(*(block1() for _ in range(4)))

    with _section("P6 Nested blocks"):
        rgnet = build(nn.Sequential(block2(), nn.Dense(10)), backend=backend)
        initialize(rgnet, init.Normal(std=0.01), seed=0)
        rgnet(X)
        print(summary(rgnet))
        print("rgnet[0][1][0].bias:", rgnet[0][1][0].bias, rounded(rgnet[0][1][0].bias.numpy()[:4]))


def _initializers(net: Model) -> None:
    with _section("P7 Built-in initializers"):
        initialize(net, init.Normal(std=0.01), force_reinit=True, seed=1)
        print("Normal(0.01):", rounded(net[0].weight[0]), "bias", rounded(net[0].bias[0]))
        initialize(net, init.Constant(1), force_reinit=True)
        print("Constant(1):", rounded(net[0].weight[0]), "bias", rounded(net[0].bias[0]))
    with _section("P8 Different initializers per block"):
        initialize(net[0], init.XavierUniform(), force_reinit=True, seed=2)
        initialize(net[1], init.Constant(42), force_reinit=True)
        print(rounded(net[0].weight[0]))
        print(rounded(net[1].weight.numpy()))
    with _section("P9 A custom initializer"):
        initialize(net, MyInit(), force_reinit=True, seed=3)
        print(rounded(net[0].weight[:2]))
    with _section("P10 Setting values directly"):
        net[0].weight[:] += 1
        net[0].weight[0, 0] = 42
        print(rounded(net[0].weight[0]))


def _defaults(backend: str | None, X: np.ndarray) -> None:
    with _section("P12 Framework defaults"):
        fresh = build(nn.Sequential(nn.Dense(8), nn.Dense(1)), backend=backend)
        fresh(X)
        w = fresh[0].weight.numpy()
        print(f"{fresh.backend}'s own default: |w| <= {np.abs(w).max():.3f}, "
              f"bias all zero: {not fresh[0].bias.numpy().any()}  (differs per framework)")
    with _section("P13 Initializers given at construction"):
        spec = nn.Sequential(
            nn.Dense(4, activation="relu", weight_init=init.Normal(std=0.01),
                     bias_init=init.Zeros()),
            nn.Dense(1, weight_init=init.Ones(), bias_init=init.Ones()))
        net13 = build(spec, backend=backend)
        initialize(net13, seed=4)
        net13(X)
        for name, p in params(net13).items():
            print(name, rounded(p.numpy()))
    with _section("P14 A custom initializer class"):
        class OnesInit(init.Initializer):
            def sample(self, target: init.Target, rng: np.random.Generator) -> np.ndarray:
                return np.ones(target.shape)

        net14 = build(nn.Sequential(nn.Dense(64, weight_init=OnesInit())), backend=backend)
        net14(X)
        print("all ones:", bool((net14[0].weight.numpy() == 1).all()), net14[0].weight)


def _ties(backend: str | None) -> None:
    with _section("P11 Tied parameters"):
        shared = nn.Dense(8, activation="relu")
        net = build(nn.Sequential(nn.Dense(8, activation="relu"), shared, shared, nn.Dense(1)),
                    backend=backend)
        initialize(net, init.Normal(std=0.5), seed=5)
        X = inputs(2, 4)
        net(X)
        print(net[1].weight[0] == net[2].weight[0])
        net[1].weight[0, 0] = 100
        print(net[1].weight[0] == net[2].weight[0])
        print("listed once:", list(params(net)), "aliases of 1.weight:",
              params(net)["1.weight"].aliases)
        g = gradients(net, X)
        print("gradient of the shared weight (sum of both uses):", rounded(g["1.weight"][0, :3]))
        ae = build(nn.Sequential(nn.Dense(3, activation="tanh", in_features=6), nn.Dense(6)),
                   backend=backend)
        tie(ae, "0.weight", "1.weight", transpose=True)
        initialize(ae, seed=6)
        print("transposed tie:", ae[1].weight.shape, "is", ae[0].weight.shape, "transposed:",
              bool((ae[1].weight.numpy() == ae[0].weight.numpy().T).all()))


def _lazy(backend: str | None) -> None:
    with _section("L1 Unknown input sizes"):
        net = build(nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10)),
                    backend=backend)
        print(net)
        for name, p in params(net).items():
            print(name, repr(p))
        try:
            net[0].weight.numpy()
        except DeferredParameterError as e:
            print("reading now:", e)
    with _section("L2 initialize only registers"):
        def report(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
            print("Init", name, shape)
            return rng.uniform(-0.1, 0.1, shape)

        initialize(net, report, seed=7)
        print("(nothing initialized yet)")
    with _section("L3 The first forward pass materializes"):
        net(inputs(2, 20))
        print(*[(n, p.shape) for n, p in params(net).items()])
    with _section("L4 Once only"):
        net(inputs(2, 20))
        print("(no Init lines)")
    with _section("L5 Forced re-initialization"):
        initialize(net, report, force_reinit=True, seed=8)
    with _section("L6 Avoiding deferral"):
        eager = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20),
                                    nn.Dense(10, in_features=256)), backend=backend)
        initialize(eager, report, seed=9)
    with _section("L7 Shapes without values (abstract materialization)"):
        ghost = build(nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10)),
                      backend=backend)
        materialize(ghost, input_shape=(2, 20), abstract=True)
        print(*[(n, p.shape, p.state) for n, p in params(ghost).items()])
    with _section("L8 Layers exist before the first call"):
        fresh = build(nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10)),
                      backend=backend)
        print("layers:", len(fresh), "parameters per layer:", [len(params(x)) for x in fresh])
    with _section("L9 Changing the input"):
        print("batch 5:", tuple(net.to_numpy(net(inputs(5, 20))).shape))
        try:
            net(inputs(2, 30))
        except InputShapeError as e:
            print("features 30:", e)
    with _section("L10 Partial sizes"):
        part = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20),
                                   nn.Dense(10)), backend=backend)
        initialize(part, report, seed=10)
        print("... and at the first call:")
        part(inputs(2, 20))
    with _section("L11 Mismatched sizes"):
        try:
            part(inputs(2, 30))
        except InputShapeError as e:
            print(e)
    with _section("L12 Inputs of different sizes: tied parameters"):
        shared = nn.Dense(4)
        twice = build(nn.Sequential(shared, shared), backend=backend)
        try:
            twice(inputs(2, 3))
        except InputShapeError as e:
            print(e)
        print("with 4 features:", tuple(twice.to_numpy(twice(inputs(2, 4))).shape))
    with _section("L13 apply: visit every layer"):
        visitor = build(nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1)),
                        backend=backend)

        def xavier(layer: Model) -> None:
            print("visit", repr(layer.path), layer.spec.kind if layer.spec else "")
            if isinstance(layer.spec, nn.Dense):
                initialize(layer, init.XavierUniform(), force_reinit=True, seed=11)

        visitor.apply(xavier)
        visitor(inputs(2, 4))
        print(rounded(visitor[0].weight[0]))
