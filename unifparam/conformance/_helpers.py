"""Specs and inputs the scenarios use, plus a numpy reference forward pass."""

from __future__ import annotations

import numpy as np

from .. import init, nn, ops


def inputs(*shape: int, seed: int = 0) -> np.ndarray:
    """Deterministic float32 inputs in [0, 1), like the chapters' ``rand`` inputs."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def mlp() -> nn.Sequential:
    """P1: Dense(8, relu) -> Dense(1)."""
    return nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1))


def lazy_mlp() -> nn.Sequential:
    """L1: Dense(256, relu) -> Dense(10), no input size."""
    return nn.Sequential(nn.Dense(256, activation="relu"), nn.Dense(10))


def block1() -> nn.Sequential:
    return nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(16, activation="relu"))


def block2() -> nn.Sequential:
    return nn.Sequential(*(block1() for _ in range(4)))


def rgnet() -> nn.Sequential:
    """P6: nested blocks."""
    return nn.Sequential(block2(), nn.Dense(10))


def reference_mlp(values: dict[str, np.ndarray], layers: list[tuple[str, str | None]],
                  x: np.ndarray) -> np.ndarray:
    """Forward pass of Dense layers in numpy from canonical values: y = x @ W.T + b."""
    acts = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}
    for prefix, act in layers:
        x = acts[act](x @ values[f"{prefix}.weight"].T + values[f"{prefix}.bias"])
    return x


class Recorder:
    """A user-defined initializer that prints and records ``Init <name> <shape>`` (L2, L3)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        line = f"Init {name} {shape}"
        print(line)
        self.calls.append(line)
        return rng.uniform(-10, 10, shape)


# ---- custom blocks (B1-B4), shared by test_blocks and the cross-backend cases -----------
class FancyMLP(nn.Block):
    """The book's FancyMLP: a fixed random weight and one layer used twice."""

    def __init__(self):
        super().__init__()
        self.rand_weight = nn.Parameter((20, 20), init=init.Uniform(0, 1), trainable=False)
        self.linear = nn.Dense(20)

    def forward(self, x):
        x = self.linear(x)
        x = ops.relu(ops.matmul(x, self.rand_weight) + 1)
        x = self.linear(x)
        while ops.sum(ops.abs(x)) > 1:
            x = x / 2
        return ops.sum(x)


class MyDense(nn.Block):
    """The book's MyDense: its own weight and bias; input size given or inferred."""

    def __init__(self, units, in_units=None):
        super().__init__()
        self.units = units
        self.weight = nn.Parameter((units, in_units))
        self.bias = nn.Parameter((units,), role="bias")

    def build(self, x_shape):
        self.weight.shape = (self.units, x_shape[-1])

    def forward(self, x):
        return ops.relu(ops.matmul(x, ops.transpose(self.weight)) + self.bias)


class TwoInputs(nn.Block):
    """L12: two inputs of different sizes, their own first layers, one tied body."""

    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Dense(8), nn.Dense(8)
        self.body = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1))

    def forward(self, a, b):
        return ops.concat([self.body(self.left(a)), self.body(self.right(b))], axis=1)
