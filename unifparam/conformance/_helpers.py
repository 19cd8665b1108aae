"""Specs and inputs the scenarios use, plus a numpy reference forward pass."""

from __future__ import annotations

import numpy as np

from .. import nn


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
    acts = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0)}
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
