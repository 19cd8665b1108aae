"""The bad-input catalogue: every case gets a typed error and leaves the model as it was.

Each case asserts, on the backend under test:

- a :class:`unifparam.UnifparamError` that also subclasses the builtin a Python user would
  catch (TypeError for a wrong type, ValueError for a bad value, LookupError/IndexError for
  a bad name or index, ...);
- a message naming the parameter, layer or argument involved;
- the model unchanged (parameter names, shapes, states, ties and values) and still working:
  a forward pass afterwards gives the same output as before (or, for a model whose shapes
  were still unknown, the same output as a fresh twin).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn, ops

from ._helpers import inputs

# ---- the models a case runs against -----------------------------------------------------


def _mlp() -> nn.Layer:
    return nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(1))


def _norm() -> nn.Layer:
    return nn.Sequential(nn.Dense(6), nn.BatchNorm(), nn.LayerNorm(), nn.Dense(1))


def _cnn() -> nn.Layer:
    return nn.Sequential(nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(2))


def _emb() -> nn.Layer:
    return nn.Sequential(nn.Embedding(10, 4), nn.Dense(2))


class _Affine(nn.Block):
    """A working block: its own Parameter (filled by build) and a Dense."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter((3, None))
        self.out = nn.Dense(1)

    def build(self, shape: tuple[int, ...]) -> None:
        self.w = nn.Parameter((3, shape[-1]))

    def forward(self, x: Any) -> Any:
        return self.out(ops.relu(ops.matmul(x, ops.transpose(self.w))))


def _block() -> nn.Layer:
    return _Affine()


#: name -> (spec factory, good input, materialized before the case?)
MODELS: dict[str, tuple[Callable[[], nn.Layer], np.ndarray, bool]] = {
    "mlp": (_mlp, inputs(2, 4), True),
    "lazy": (_mlp, inputs(2, 4), False),
    "norm": (_norm, inputs(4, 5), True),
    "cnn": (_cnn, inputs(2, 3, 8, 8), True),
    "emb": (_emb, np.array([[0, 3, 9], [1, 2, 8]], dtype=np.int64), True),
    "block": (_block, inputs(2, 4), True),
}


def _make(build: Callable[..., up.Model], model: str) -> up.Model:
    spec, x, ready = MODELS[model]
    net = build(spec())
    up.initialize(net, init.Normal(std=0.1), seed=0)
    if ready:
        net(x)
    return net


# ---- the catalogue ----------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    model: str
    act: Callable[[Any], Any]  # gets t: t.net, t.x, t.build, t.tmp
    error: type[up.UnifparamError]
    builtin: type[Exception]
    names: tuple[str, ...]  # each must appear in the message
    requires: str | None = None  # a backend capability the case needs


CASES: list[Case] = []


def case(id: str, act: Callable[[Any], Any], error: type[up.UnifparamError],
         builtin: type[Exception], *names: str, model: str = "mlp",
         requires: str | None = None) -> None:
    CASES.append(Case(id, model, act, error, builtin, names, requires))


ST, SE = up.SpecTypeError, up.SpecError
AE, AV = up.ArgumentError, up.ArgumentValueError
IE, IS = up.InitializerError, up.InputShapeError
nan, inf = math.nan, math.inf

# spec constructors: a typed SpecError before any framework sees the spec
for id_, make, err, names in [
    ("dense-units-bool", lambda: nn.Dense(True), ST, ("Dense", "units")),
    ("dense-units-none", lambda: nn.Dense(None), ST, ("Dense", "units")),
    ("dense-units-float", lambda: nn.Dense(2.5), ST, ("units",)),
    ("dense-units-str", lambda: nn.Dense("8"), ST, ("units",)),
    ("dense-units-zero", lambda: nn.Dense(0), SE, ("units",)),
    ("dense-units-negative", lambda: nn.Dense(-3), SE, ("units",)),
    ("dense-activation-unknown", lambda: nn.Dense(8, activation="relux"), SE, ("activation",)),
    ("dense-activation-int", lambda: nn.Dense(8, activation=3), ST, ("activation",)),
    ("dense-use-bias-str", lambda: nn.Dense(8, use_bias="no"), ST, ("use_bias",)),
    ("dense-in-features-zero", lambda: nn.Dense(8, in_features=0), SE, ("in_features",)),
    ("dense-in-features-float", lambda: nn.Dense(8, in_features=4.0), ST, ("in_features",)),
    ("conv-kernel-zero", lambda: nn.Conv2D(4, 0), SE, ("Conv2D", "kernel_size")),
    ("conv-kernel-negative", lambda: nn.Conv2D(4, -3), SE, ("kernel_size",)),
    ("conv-kernel-pair-negative", lambda: nn.Conv2D(4, (3, -1)), SE, ("kernel_size",)),
    ("conv-kernel-three-values", lambda: nn.Conv2D(4, (3, 3, 3)), SE, ("kernel_size",)),
    ("conv-kernel-str", lambda: nn.Conv2D(4, "3"), ST, ("kernel_size",)),
    ("conv-kernel-none", lambda: nn.Conv2D(4, None), ST, ("kernel_size",)),
    ("conv-filters-zero", lambda: nn.Conv2D(0, 3), SE, ("filters",)),
    ("conv-filters-none", lambda: nn.Conv2D(None, 3), ST, ("filters",)),
    ("conv-stride-zero", lambda: nn.Conv2D(4, 3, stride=0), SE, ("stride",)),
    ("conv-stride-float", lambda: nn.Conv2D(4, 3, stride=1.5), ST, ("stride",)),
    ("conv-padding-negative", lambda: nn.Conv2D(4, 3, padding=-1), SE, ("padding",)),
    ("conv-padding-word", lambda: nn.Conv2D(4, 3, padding="full"), SE, ("padding",)),
    ("conv-padding-float", lambda: nn.Conv2D(4, 3, padding=1.0), ST, ("padding",)),
    ("conv-same-with-stride", lambda: nn.Conv2D(4, 3, 2, "same"), SE, ("padding", "stride")),
    ("conv-same-even-kernel", lambda: nn.Conv2D(4, 2, padding="same"), SE, ("padding",)),
    ("conv-in-channels-negative", lambda: nn.Conv2D(4, 3, in_channels=-1), SE, ("in_channels",)),
    ("conv-activation-unknown", lambda: nn.Conv2D(4, 3, activation="elu"), SE, ("activation",)),
    ("dropout-str", lambda: nn.Dropout("a"), ST, ("Dropout", "rate")),
    ("dropout-one", lambda: nn.Dropout(1.0), SE, ("rate",)),
    ("dropout-negative", lambda: nn.Dropout(-0.1), SE, ("rate",)),
    ("dropout-nan", lambda: nn.Dropout(nan), SE, ("rate",)),
    ("dropout-none", lambda: nn.Dropout(None), ST, ("rate",)),
    ("embedding-rows-zero", lambda: nn.Embedding(0, 4), SE, ("Embedding", "num_embeddings")),
    ("embedding-features-none", lambda: nn.Embedding(10, None), ST, ("features",)),
    ("embedding-rows-bool", lambda: nn.Embedding(True, 4), ST, ("num_embeddings",)),
    ("layernorm-eps-negative", lambda: nn.LayerNorm(eps=-1), SE, ("LayerNorm", "eps")),
    ("layernorm-eps-zero", lambda: nn.LayerNorm(eps=0), SE, ("eps",)),
    ("layernorm-eps-nan", lambda: nn.LayerNorm(eps=nan), SE, ("eps",)),
    ("layernorm-eps-str", lambda: nn.LayerNorm(eps="small"), ST, ("eps",)),
    ("layernorm-in-features-zero", lambda: nn.LayerNorm(0), SE, ("in_features",)),
    ("batchnorm-momentum-5", lambda: nn.BatchNorm(momentum=5), SE, ("BatchNorm", "momentum")),
    ("batchnorm-momentum-negative", lambda: nn.BatchNorm(momentum=-0.1), SE, ("momentum",)),
    ("batchnorm-momentum-str", lambda: nn.BatchNorm(momentum="a"), ST, ("momentum",)),
    ("batchnorm-eps-inf", lambda: nn.BatchNorm(eps=inf), SE, ("eps",)),
    ("activation-unknown", lambda: nn.Activation("swish"), SE, ("activation", "swish")),
    ("activation-int", lambda: nn.Activation(3), ST, ("activation",)),
    ("sequential-int", lambda: nn.Sequential(3), ST, ("Sequential", "int")),
    ("sequential-class", lambda: nn.Sequential(nn.Dense), ST, ("Sequential", "type")),
    ("sequential-add-str", lambda: nn.Sequential().add("Dense"), ST, ("Sequential", "str")),
]:
    case(f"spec-{id_}", lambda t, make=make: make(), err,
         TypeError if err is ST else ValueError, *names)

# build, and verbs given something that is not a model handle
case("build-backend-int", lambda t: up.build(_mlp(), backend=3), AE, TypeError, "backend")
case("build-backend-unknown", lambda t: up.build(_mlp(), backend="nope"),
     up.BackendNotFoundError, LookupError, "'nope'")
case("build-backend-variant", lambda t: up.build(_mlp(), backend="keras:jaxx"),
     up.BackendNotFoundError, LookupError, "jaxx")
case("build-int", lambda t: up.build(3, backend=t.net.backend), AE, TypeError, "model", "int")
case("build-spec-class", lambda t: up.build(nn.Dense, backend=t.net.backend), AE, TypeError,
     "Dense")
case("build-str", lambda t: up.build("Dense", backend=t.net.backend), AE, TypeError, "str")
case("params-int", lambda t: up.params(3), AE, TypeError, "params", "int")
case("params-none", lambda t: up.params(None), AE, TypeError, "params", "NoneType")
case("summary-int", lambda t: up.summary(3), AE, TypeError, "unifparam.summary", "int")
case("initialize-int", lambda t: up.initialize(3, init.Zeros()), AE, TypeError, "initialize")
case("materialize-str", lambda t: up.materialize("net"), AE, TypeError, "materialize")
case("gradients-none", lambda t: up.gradients(None, t.x), AE, TypeError, "gradients")
case("tie-model-int", lambda t: up.tie(3, "0.weight", "1.weight"), AE, TypeError, "tie")

# names and indices
case("params-unknown-name", lambda t: up.params(t.net)["0.wieght"], up.UnknownNameError,
     KeyError, "'0.wieght'", "'0.weight'")
case("layer-index-out-of-range", lambda t: t.net[5], up.UnknownNameError, IndexError, "5")
case("layer-negative-index", lambda t: t.net[-3], up.UnknownNameError, IndexError, "-3")
case("layer-unknown-name", lambda t: t.net["7"], up.UnknownNameError, KeyError, "'7'")
case("layer-unknown-dotted", lambda t: t.net["0.x"], up.UnknownNameError, LookupError, "'0.x'")


# parameter writes
def _w(t: Any) -> up.Param:
    return t.net[0].weight


def _dtype_object() -> np.ndarray:
    value = np.empty((8, 4), dtype=object)
    value[:] = 1.0
    return value


W, B = ("'0.weight'",), ("'1.bias'",)
for id_, act, err, builtin, names in [
    ("set-complex", lambda t: _w(t).set(np.ones((8, 4)) * (1 + 1j)), AE, TypeError, W),
    ("set-overflow", lambda t: _w(t).set(np.full((8, 4), 1e39)), AV, ValueError, W),
    ("set-overflow-one-value", lambda t: _w(t).set(np.eye(8, 4) * -1e300), AV, ValueError, W),
    ("set-string", lambda t: _w(t).set("abc"), AE, TypeError, W),
    ("set-string-array", lambda t: _w(t).set(np.full((8, 4), "a")), AE, TypeError, W),
    ("set-object-array", lambda t: _w(t).set(_dtype_object()), AE, TypeError, W),
    ("set-none", lambda t: _w(t).set(None), AE, TypeError, W),
    ("set-wrong-shape", lambda t: _w(t).set(np.zeros((4, 8))), up.ValueShapeError, ValueError, W),
    ("set-ragged-list", lambda t: _w(t).set([[1, 2], [3]]), up.ValueShapeError, ValueError, W),
    ("set-bias-wrong-rank", lambda t: t.net[1].bias.set(np.zeros((1, 1))), up.ValueShapeError,
     ValueError, B),
    ("setitem-string", lambda t: _w(t).__setitem__((0, 0), "a"), AE, TypeError, W),
    ("setitem-complex", lambda t: _w(t).__setitem__(0, 1j), AE, TypeError, W),
    ("setitem-overflow", lambda t: t.net[1].bias.__setitem__(0, 1e39), AV, ValueError, B),
    ("setitem-row-out-of-range", lambda t: _w(t).__setitem__((8, 0), 1.0), up.ParamIndexError,
     IndexError, W),
    ("setitem-too-many-indices", lambda t: _w(t).__setitem__((0, 0, 0), 1.0),
     up.ParamIndexError, IndexError, W),
    ("setitem-string-index", lambda t: _w(t).__setitem__("a", 1.0), up.ParamIndexError,
     IndexError, W),
    ("setitem-wrong-shape", lambda t: _w(t).__setitem__(0, np.zeros(5)), up.ValueShapeError,
     ValueError, W),
    ("getitem-out-of-range", lambda t: _w(t)[8], up.ParamIndexError, IndexError, W),
    ("getitem-string-index", lambda t: _w(t)["a"], up.ParamIndexError, IndexError, W),
    ("iadd-wrong-shape", lambda t: operator.iadd(_w(t), np.ones((3, 3))), up.ValueShapeError,
     ValueError, W),
    ("iadd-broadcasts-up", lambda t: operator.iadd(_w(t), np.ones((2, 8, 4))),
     up.ValueShapeError, ValueError, W),
    ("iadd-string", lambda t: operator.iadd(_w(t), "a"), AE, TypeError, W),
    ("isub-complex", lambda t: operator.isub(_w(t), 2j), AE, TypeError, W),
    ("imul-overflowing-factor", lambda t: operator.imul(_w(t), 1e39), AV, ValueError, W),
    ("itruediv-overflowing-result", lambda t: operator.itruediv(_w(t), 1e-40), AV, ValueError,
     W),
    ("itruediv-string", lambda t: operator.itruediv(_w(t), "2"), AE, TypeError, W),
]:
    case(f"param-{id_}", act, err, builtin, *names)
case("param-running-var-string", lambda t: t.net[1].running_var.set("x"), AE, TypeError,
     "'1.running_var'", model="norm")
case("param-running-mean-overflow", lambda t: t.net[1].running_mean.set(np.full(6, 1e40)), AV,
     ValueError, "'1.running_mean'", model="norm")
case("param-write-deferred", lambda t: _w(t).__setitem__((0, 0), 1.0),
     up.DeferredParameterError, RuntimeError, "'0.weight'", model="lazy")
case("param-read-deferred", lambda t: _w(t).numpy(), up.DeferredParameterError, RuntimeError,
     "'0.weight'", model="lazy")


# initialize
def _reinit(initializer: Any, **kw: Any) -> Callable[[Any], None]:
    return lambda t: up.initialize(t.net, initializer, force_reinit=True, **kw)


def _raises(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.ones(shape) * (1 // len(""))  # ZeroDivisionError


def _wrong_shape(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros((3, 3))


def _fails_on_last_bias(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    if name == "1.bias":
        raise RuntimeError("cannot fill this one")
    return np.ones(shape)


def _complex(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape, dtype=complex)


def _nan(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.full(shape, np.nan)


def _text(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> str:
    return "abc"


for id_, act, err, builtin, names in [
    ("class-not-instance", _reinit(init.Normal), AE, TypeError, ("Normal", "instance")),
    ("string", _reinit("normal"), AE, TypeError, ("'normal'",)),
    ("int", _reinit(5), AE, TypeError, ("init=5",)),
    ("select-int", _reinit(init.Zeros(), select=5), AE, TypeError, ("select",)),
    ("select-float", _reinit(init.Zeros(), select=2.5), AE, TypeError, ("select",)),
    ("select-matches-nothing", _reinit(init.Zeros(), select="*.gamma"), up.UnknownNameError,
     KeyError, ("*.gamma",)),
    ("select-list-with-int", _reinit(init.Zeros(), select=["0.weight", 5]), AE, TypeError,
     ("select",)),
    ("select-other-model", lambda t: up.initialize(t.net, init.Zeros(), force_reinit=True,
                                                   select=t.build(_mlp())[0]), AV, ValueError,
     ("select", "another model")),
    ("seed-string", _reinit(init.Zeros(), seed="a"), AE, TypeError, ("seed",)),
    ("seed-nan", _reinit(init.Zeros(), seed=nan), AE, TypeError, ("seed",)),
    ("seed-float", _reinit(init.Zeros(), seed=1.5), AE, TypeError, ("seed",)),
    ("seed-bool", _reinit(init.Zeros(), seed=True), AE, TypeError, ("seed",)),
    ("force-reinit-string", lambda t: up.initialize(t.net, init.Zeros(), force_reinit="yes"),
     AE, TypeError, ("force_reinit",)),
    ("normal-std-nan", lambda t: init.Normal(std=nan), IE, ValueError, ("std",)),
    ("normal-std-negative", lambda t: init.Normal(std=-1), IE, ValueError, ("std",)),
    ("normal-std-string", lambda t: init.Normal(std="a"), AE, TypeError, ("std",)),
    ("normal-two-positional", lambda t: init.Normal(0, 0.01), IE, ValueError, ("Normal", "std")),
    ("uniform-infinite", lambda t: init.Uniform(0, inf), IE, ValueError, ("high",)),
    ("uniform-reversed", lambda t: init.Uniform(1, 0), IE, ValueError, ("low", "high")),
    ("uniform-one-bound", lambda t: init.Uniform(0.1), IE, ValueError, ("Uniform",)),
    ("constant-nan", lambda t: init.Constant(nan), IE, ValueError, ("value",)),
    ("constant-string", lambda t: init.Constant("a"), AE, TypeError, ("value",)),
    ("kaiming-nonlinearity-unknown", lambda t: init.KaimingUniform(nonlinearity="relux"), IE,
     ValueError, ("relux",)),
    ("kaiming-nonlinearity-int", lambda t: init.KaimingNormal(nonlinearity=3), AE, TypeError,
     ("nonlinearity",)),
    ("kaiming-mode-unknown", lambda t: init.KaimingNormal(mode="fan"), IE, ValueError,
     ("mode",)),
    ("kaiming-a-nan", lambda t: init.KaimingUniform(a=nan), IE, ValueError, ("a=nan",)),
    ("xavier-gain-nan", lambda t: init.XavierUniform(gain=nan), IE, ValueError, ("gain",)),
    ("orthogonal-gain-inf", lambda t: init.Orthogonal(gain=inf), IE, ValueError, ("gain",)),
    ("function-raises", _reinit(_raises), IE, ValueError, ("'0.weight'", "ZeroDivisionError")),
    ("function-wrong-shape", _reinit(_wrong_shape), IE, ValueError, ("'0.weight'", "(3, 3)")),
    ("function-fails-for-one", _reinit(_fails_on_last_bias, select="*"), IE, ValueError,
     ("'1.bias'",)),
    ("function-complex", _reinit(_complex), IE, ValueError, ("'0.weight'", "complex")),
    ("function-nan", _reinit(_nan), IE, ValueError, ("'0.weight'", "non-finite")),
    ("function-string", _reinit(_text), IE, ValueError, ("'0.weight'",)),
]:
    case(f"init-{id_}", act, err, builtin, *names)


# user initializers that fail only when shapes become known (lazy model)
def _then_materialize(fn: Any, select: str | None = None) -> Callable[[Any], None]:
    def act(t: Any) -> None:
        up.initialize(t.net, fn, select=select)
        up.materialize(t.net, t.x)
    return act


def _then_forward(fn: Any) -> Callable[[Any], None]:
    def act(t: Any) -> None:
        up.initialize(t.net, fn)
        t.net(t.x)
    return act


for id_, act, names in [
    ("raises", _then_materialize(_raises, "0.weight"), ("'0.weight'",)),
    ("wrong-shape", _then_materialize(_wrong_shape), ("'0.weight'",)),
    ("fails-for-one", _then_materialize(_fails_on_last_bias, "*"), ("'1.bias'",)),
    ("nan", _then_materialize(_nan), ("'0.weight'",)),
    ("raises-on-first-call", _then_forward(_raises), ("'0.weight'",)),
]:
    case(f"lazy-init-{id_}", act, IE, ValueError, *names, model="lazy")

# materialize
for id_, act, err, builtin, names in [
    ("empty-dimension", lambda t: up.materialize(t.net, np.ones((2, 0), np.float32)), IS,
     ValueError, ("(2, 0)",)),
    ("negative-shape", lambda t: up.materialize(t.net, input_shape=(2, -4)), IS, ValueError,
     ("(2, -4)",)),
    ("float-shape", lambda t: up.materialize(t.net, input_shape=(2, 2.5)), IS, ValueError,
     ("2.5",)),
    ("shape-string", lambda t: up.materialize(t.net, input_shape="ab"), AE, TypeError,
     ("input_shape",)),
    ("shape-int", lambda t: up.materialize(t.net, input_shape=5), AE, TypeError,
     ("input_shape",)),
    ("no-input", lambda t: up.materialize(t.net), IS, ValueError, ("'0.weight'",)),
    ("two-inputs", lambda t: up.materialize(t.net, t.x, t.x), IS, ValueError, ("input",)),
    ("strings", lambda t: up.materialize(t.net, np.full((2, 4), "a")), AE, TypeError,
     ("input", "<U1")),
    ("one-dimensional", lambda t: up.materialize(t.net, np.ones(4, np.float32)), IS,
     ValueError, ("'0'", "Dense")),
]:
    case(f"materialize-{id_}", act, err, builtin, *names, model="lazy")

# forward
for id_, act, err, builtin, names in [
    ("no-input", lambda t: t.net(), IS, ValueError, ("input",)),
    ("two-inputs", lambda t: t.net(t.x, t.x), IS, ValueError, ("input",)),
    ("wrong-features", lambda t: t.net(np.ones((2, 5), np.float32)), IS, ValueError,
     ("'0'", "4", "5")),
    ("one-dimensional", lambda t: t.net(np.ones(4, np.float32)), IS, ValueError, ("'0'",)),
    ("strings", lambda t: t.net(np.full((2, 4), "a")), AE, TypeError, ("input", "<U1")),
    ("list-of-strings", lambda t: t.net(["a", "b"]), AE, TypeError, ("input",)),
    ("object-array", lambda t: t.net(np.empty((2, 4), object)), AE, TypeError, ("input",)),
    ("none", lambda t: t.net(None), AE, TypeError, ("input",)),
    ("complex", lambda t: t.net(t.x + 0j), AE, TypeError, ("input", "complex")),
    ("empty-batch", lambda t: t.net(np.ones((0, 4), np.float32)), IS, ValueError, ("(0, 4)",)),
    ("sub-layer", lambda t: t.net[0](t.x), up.UnsupportedError, NotImplementedError, ("'0'",)),
]:
    case(f"forward-{id_}", act, err, builtin, *names)
case("forward-lazy-strings", lambda t: t.net(np.full((2, 4), "a")), AE, TypeError, "input",
     model="lazy")
case("forward-conv-wrong-channels", lambda t: t.net(np.ones((2, 1, 8, 8), np.float32)), IS,
     ValueError, "'0'", "Conv2D", model="cnn")
case("forward-conv-too-small", lambda t: t.net(np.ones((2, 3, 2, 2), np.float32)), IS,
     ValueError, "'0'", "kernel", model="cnn")
case("forward-conv-three-dims", lambda t: t.net(np.ones((3, 8, 8), np.float32)), IS,
     ValueError, "'0'", "(N, C, H, W)", model="cnn")
case("forward-norm-wrong-features", lambda t: t.net(np.ones((4, 3), np.float32)), IS,
     ValueError, "'0'", model="norm")
for id_, bad, err, builtin, names in [
    ("index-too-large", np.array([[0, 1, 10]]), up.ParamIndexError, IndexError, ("10",)),
    ("index-huge", np.array([[10 ** 6]]), up.ParamIndexError, IndexError, ("1000000",)),
    ("index-negative", np.array([[-1, 0, 1]]), up.ParamIndexError, IndexError, ("-1",)),
    ("float-indices", np.array([[0.0, 1.0, 2.0]], np.float32), AE, TypeError, ("float32",)),
]:
    case(f"forward-embedding-{id_}", lambda t, bad=bad: t.net(bad), err, builtin,
         "'0'", "Embedding", *names, model="emb")
case("gradients-embedding-index-too-large", lambda t: up.gradients(t.net, np.array([[0, 10]])),
     up.ParamIndexError, IndexError, "'0'", "Embedding", model="emb", requires="gradients")

# tie
for id_, act, err, builtin, names in [
    ("ints", lambda t: up.tie(t.net, 0, 1), AE, TypeError, ("a=0",)),
    ("second-int", lambda t: up.tie(t.net, "0.weight", 1), AE, TypeError, ("b=1",)),
    ("none", lambda t: up.tie(t.net, None, "1.weight"), AE, TypeError, ("a=None",)),
    ("layer-and-parameter", lambda t: up.tie(t.net, t.net[0], "1.weight"), up.TieError,
     ValueError, ("'0'", "'1.weight'")),
    ("weight-shapes-differ", lambda t: up.tie(t.net, "0.weight", "1.weight"), up.TieError,
     ValueError, ("'0.weight'", "'1.weight'")),
    ("bias-shapes-differ", lambda t: up.tie(t.net, "0.bias", "1.bias"), up.TieError, ValueError,
     ("'0.bias'", "'1.bias'")),
    ("layer-shapes-differ", lambda t: up.tie(t.net, t.net[0], t.net[1]), up.TieError,
     ValueError, ("'0", "'1")),
    ("unknown-name", lambda t: up.tie(t.net, "0.weight", "9.weight"), up.UnknownNameError,
     KeyError, ("'9.weight'",)),
    ("layers-transposed", lambda t: up.tie(t.net, t.net[0], t.net[1], transpose=True),
     up.TieError, ValueError, ("'0'", "'1'")),
    ("transpose-string", lambda t: up.tie(t.net, "0.weight", "1.weight", transpose="yes"), AE,
     TypeError, ("transpose",)),
    ("other-model", lambda t: up.tie(t.net, t.build(_mlp())[0], t.net[1]), AV, ValueError,
     ("tie(a=", "another model")),
]:
    case(f"tie-{id_}", act, err, builtin, *names)

# gradients
for id_, act, err, builtin, names in [
    ("wrong-features", lambda t: up.gradients(t.net, np.ones((2, 5), np.float32)), IS,
     ValueError, ("'0'",)),
    ("no-input", lambda t: up.gradients(t.net), IS, ValueError, ("input",)),
    ("two-inputs", lambda t: up.gradients(t.net, t.x, t.x), IS, ValueError, ("input",)),
    ("strings", lambda t: up.gradients(t.net, np.full((2, 4), "a")), AE, TypeError, ("input",)),
    ("non-scalar-loss", lambda t: up.gradients(t.net, t.x, loss=lambda y: y), AV, ValueError,
     ("loss", "(2, 1)")),
    ("loss-returns-none", lambda t: up.gradients(t.net, t.x, loss=lambda y: None), AE,
     TypeError, ("loss", "NoneType")),
    ("loss-returns-string", lambda t: up.gradients(t.net, t.x, loss=lambda y: "y"), AE,
     TypeError, ("loss", "str")),
    ("loss-not-callable", lambda t: up.gradients(t.net, t.x, loss=5), AE, TypeError,
     ("loss=5",)),
]:
    case(f"gradients-{id_}", act, err, builtin, *names, requires="gradients")
case("gradients-lazy-wrong-rank", lambda t: up.gradients(t.net, np.ones(4, np.float32)), IS,
     ValueError, "'0'", model="lazy", requires="gradients")


# checkpoints
def _garbage(t: Any) -> None:
    path = t.tmp / "garbage.safetensors"
    path.write_bytes(b"\x07" * 64)
    up.load(t.net, path)


def _other_model(t: Any) -> None:
    other = t.build(nn.Sequential(nn.Dense(3), nn.Dense(1)))
    other(inputs(2, 4))
    up.save(other, t.tmp / "other.safetensors")
    up.load(t.net, t.tmp / "other.safetensors")


def _read_only(t: Any) -> None:
    folder = t.tmp / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes into any directory but a read-only mount
        folder = Path("/sys")
    up.save(t.net, folder / "m.safetensors")


for id_, act, err, builtin, names in [
    ("save-missing-directory", lambda t: up.save(t.net, t.tmp / "nope" / "m.safetensors"),
     up.CheckpointNotFoundError, FileNotFoundError, ("nope",)),
    ("save-read-only-directory", _read_only, up.CheckpointPermissionError, PermissionError,
     ("m.safetensors",)),
    ("save-path-none", lambda t: up.save(t.net, None), up.CheckpointPathError, TypeError,
     ("None",)),
    ("save-path-int", lambda t: up.save(t.net, 3), up.CheckpointPathError, TypeError, ("3",)),
    ("load-missing-file", lambda t: up.load(t.net, t.tmp / "none.safetensors"),
     up.CheckpointNotFoundError, FileNotFoundError, ("none.safetensors",)),
    ("load-path-none", lambda t: up.load(t.net, None), up.CheckpointPathError, TypeError,
     ("None",)),
    ("load-directory", lambda t: up.load(t.net, t.tmp), up.CheckpointNotFoundError,
     FileNotFoundError, ("directory",)),
    ("load-garbage", _garbage, up.CheckpointFormatError, ValueError, ("garbage.safetensors",)),
    ("load-other-model", _other_model, up.CheckpointMismatchError, ValueError, ("0.weight",)),
]:
    case(f"checkpoint-{id_}", act, err, builtin, *names)


# custom blocks: a broken block fails with a typed error naming it, and the model built from
# it is left as it was (still deferred); a structural mistake fails at construction
class _NoInput(nn.Block):
    def __init__(self) -> None:
        super().__init__()
        self.d = nn.Dense(2)

    def forward(self) -> Any:
        return self.d(np.ones((2, 4), np.float32))


class _TwoInputs(_NoInput):
    def forward(self, x: Any, y: Any) -> Any:  # type: ignore[override]
        return self.d(x)


class _NoForward(nn.Block):
    def __init__(self) -> None:
        super().__init__()
        self.d = nn.Dense(2)


class _ReturnsNone(_NoForward):
    def forward(self, x: Any) -> Any:
        self.d(x)


class _ReturnsText(_NoForward):
    def forward(self, x: Any) -> Any:
        self.d(x)
        return "y"


class _WrongShape(nn.Block):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter((3, 5))

    def forward(self, x: Any) -> Any:
        return ops.matmul(x, ops.transpose(self.weight))


class _BuildContradicts(nn.Block):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter((2, None))

    def build(self, shape: tuple[int, ...]) -> None:
        self.w = nn.Parameter((3, shape[-1]))

    def forward(self, x: Any) -> Any:
        return ops.matmul(x, ops.transpose(self.w))


class _BuildNegative(_BuildContradicts):
    def build(self, shape: tuple[int, ...]) -> None:
        self.w = nn.Parameter((2, -shape[-1]))


def _dotted(what: Any) -> Callable[[], nn.Layer]:
    def make() -> nn.Layer:
        block = _NoForward()
        setattr(block, "a.b", what())
        return block
    return make


def _self_cycle() -> nn.Layer:
    block = _NoForward()
    block.me = block
    return block


def _two_cycle() -> nn.Layer:
    a, b = _NoForward(), _NoForward()
    a.b = b
    b.a = a
    return a


def _sequential_cycle() -> nn.Layer:
    outer = nn.Sequential(nn.Dense(2))
    inner = _NoForward()
    inner.outer = outer
    outer.add(inner)
    return outer


def _list_with_text() -> nn.Layer:
    block = _NoForward()
    block.layers = [nn.Dense(3), "relu", nn.Dense(2)]
    return block


def _broken(make: Callable[[], nn.Layer], call: Callable[[Any, Any], Any] = lambda n, x: n(x)
            ) -> Callable[[Any], None]:
    def act(t: Any) -> None:
        net = t.build(make())
        before = _snapshot(net)
        try:
            call(net, t.x)
        finally:
            _same(before, _snapshot(net))
    return act


def _grads(net: up.Model, x: Any) -> Any:
    return up.gradients(net, x)


OE = up.OutputError
for id_, act, err, builtin, names in [
    ("forward-no-input", _broken(_NoInput), ST, TypeError, ("_NoInput", "forward(self)")),
    ("forward-two-inputs", _broken(_TwoInputs), ST, TypeError, ("_TwoInputs", "1 input")),
    ("no-forward", _broken(_NoForward), ST, TypeError, ("_NoForward", "forward")),
    ("returns-none", _broken(_ReturnsNone), OE, TypeError, ("_ReturnsNone", "None")),
    ("returns-string", _broken(_ReturnsText), OE, TypeError, ("_ReturnsText", "str")),
    ("parameter-wrong-shape", _broken(_WrongShape), IS, ValueError,
     ("_WrongShape", "'weight'", "(3, 5)", "(2, 4)")),
    ("parameter-wrong-shape-gradients", _broken(_WrongShape, _grads), IS, ValueError,
     ("'weight'", "(3, 5)")),
    ("build-contradicts", _broken(_BuildContradicts), SE, ValueError,
     ("_BuildContradicts", "'w'", "(3, 4)")),
    ("build-negative-size", _broken(_BuildNegative), SE, ValueError,
     ("_BuildNegative", "(2, -4)")),
    ("dotted-layer-name", lambda t: _dotted(lambda: nn.Dense(2))(), SE, ValueError,
     ("'a.b'",)),
    ("dotted-parameter-name", lambda t: _dotted(lambda: nn.Parameter(2))(), SE, ValueError,
     ("'a.b'",)),
    ("self-cycle", lambda t: _self_cycle(), SE, ValueError, ("me", "cycle")),
    ("two-block-cycle", lambda t: _two_cycle(), SE, ValueError, ("_NoForward.a", "cycle")),
    ("sequential-cycle", lambda t: _sequential_cycle(), SE, ValueError, ("Sequential",
                                                                          "cycle")),
    ("list-with-non-layer", lambda t: _list_with_text(), ST, TypeError, ("layers",)),
    ("dict-with-non-layer", lambda t: setattr(_NoForward(), "heads", {"a": nn.Dense(2),
                                                                    "b": 3}), ST,
     TypeError, ("heads",)),
    ("parameter-role-unknown", lambda t: nn.Parameter((2, 2), role="nonsense"), SE,
     ValueError, ("role", "'nonsense'")),
    ("parameter-role-int", lambda t: nn.Parameter((2, 2), role=3), ST, TypeError, ("role",)),
    ("parameter-trainable-str", lambda t: nn.Parameter(2, trainable="no"), ST, TypeError,
     ("trainable",)),
]:
    case(f"block-{id_}", act, err, builtin, *names, model="block")
case("block-forward-wrong-features", lambda t: t.net(np.ones((2, 5), np.float32)), IS,
     ValueError, "_Affine", "'w'", "(3, 4)", "(2, 5)", model="block")
case("block-gradients-loss-float", lambda t: up.gradients(t.net, t.x, loss=lambda y: 1.0), AE,
     TypeError, "loss", "float", model="block", requires="gradients")

# gradients: the loss function
for id_, loss, names in [
    ("loss-two-arguments", lambda a, b: a, ("loss", "(a, b)")),
    ("loss-no-argument", lambda: 1.0, ("loss", "()")),
    ("loss-returns-float", lambda y: 1.0, ("loss", "float", "1.0")),
    ("loss-returns-int", lambda y: 0, ("loss", "int")),
    ("loss-returns-numpy-scalar", lambda y: np.float32(2.0), ("loss", "float32")),
]:
    case(f"gradients-{id_}", lambda t, loss=loss: up.gradients(t.net, t.x, loss=loss), AE,
         TypeError, *names, requires="gradients")

# ties of a parameter or layer to itself
case("tie-parameter-to-itself", lambda t: up.tie(t.net, "0.weight", "0.weight"), up.TieError,
     ValueError, "'0.weight'")
case("tie-param-handle-to-itself", lambda t: up.tie(t.net, _w(t), _w(t)), up.TieError,
     ValueError, "'0.weight'")
case("tie-layer-to-itself", lambda t: up.tie(t.net, t.net[0], t.net[0]), up.TieError,
     ValueError, "'0.")

# handles: attributes
HA = up.HandleAttributeError
case("handle-attribute-typo", lambda t: t.net[0].wieght, HA, AttributeError, "'wieght'",
     "'0'", "Did you mean 'weight'")
case("handle-attribute-typo-model", lambda t: t.net.paramz, HA, AttributeError, "'paramz'")
case("handle-assign-parameter", lambda t: setattr(t.net[0], "weight", np.zeros((8, 4))), HA,
     AttributeError, "'weight'", "'0'", "p[...] = v")
case("handle-assign-new", lambda t: setattr(t.net, "extra", 3), HA, AttributeError, "'extra'")
case("handle-attribute-typo-lazy", lambda t: t.net[1].bais, HA, AttributeError, "'bais'",
     "'bias'", model="lazy")

# inputs the first layer cannot take name it
for id_, act, err, builtin in [
    ("zero-size", lambda t: t.net(np.ones((0, 4), np.float32)), IS, ValueError),
    ("zero-features", lambda t: t.net(np.ones((2, 0), np.float32)), IS, ValueError),
    ("negative-input-shape", lambda t: up.materialize(t.net, input_shape=(2, -1)), IS,
     ValueError),
    ("strings", lambda t: t.net(np.full((2, 4), "a")), AE, TypeError),
    ("none", lambda t: t.net(None), AE, TypeError),
    ("gradients-zero-size", lambda t: up.gradients(t.net, np.ones((0, 4), np.float32)), IS,
     ValueError),
    ("gradients-strings", lambda t: up.gradients(t.net, np.full((2, 4), "a")), AE, TypeError),
]:
    for model in ("mlp", "lazy"):
        case(f"input-{id_}-{model}", act, err, builtin, "'0'", "Dense", model=model,
             requires="gradients" if "gradients" in id_ else None)


# ---- the one test -----------------------------------------------------------------------
def _snapshot(net: up.Model) -> dict[str, tuple[Any, ...]]:
    out = {}
    for name, p in up.params(net).items():
        value = p.numpy() if p.state == "materialized" else None
        out[name] = (p.shape, p.state, p.dtype, p.aliases, value)
    return out


def _same(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> None:
    assert list(after) == list(before), "parameter names changed"
    for name, (*meta, value) in before.items():
        *meta_after, value_after = after[name]
        assert meta_after == meta, f"{name}: (shape, state, dtype, aliases) changed"
        if value is None:
            assert value_after is None
        else:
            np.testing.assert_array_equal(value_after, value, err_msg=f"{name} changed")


def _output(net: up.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(net.to_numpy(net(x)))


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.requires(c.requires)] if c.requires else [])
    for c in CASES])
def test_bad_input(build, tmp_path, case: Case):
    net = _make(build, case.model)
    x = MODELS[case.model][1]
    ready = MODELS[case.model][2]
    out_before = _output(net, x) if ready else None
    before = _snapshot(net)
    t = SimpleNamespace(net=net, x=x, build=build, tmp=tmp_path)

    with pytest.raises(up.UnifparamError) as caught:
        case.act(t)

    error = caught.value
    assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
    assert isinstance(error, case.builtin), f"{type(error).__mro__} lacks {case.builtin}"
    for name in case.names:
        assert name in str(error), f"message does not name {name!r}: {error}"
    _same(before, _snapshot(net))
    if ready:
        np.testing.assert_array_equal(_output(net, x), out_before)
    else:  # still working: the same output as a fresh twin with the same initializer
        up.initialize(net, init.Normal(std=0.1), seed=0)
        np.testing.assert_array_equal(_output(net, x), _output(_make(build, case.model), x))


def test_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 120
    assert len({c.id for c in CASES}) == len(CASES)


# ---- not errors: rules the catalogue's neighbours rely on -------------------------------
def test_non_finite_values_written_are_kept_as_written(build):
    """NaN and inf written explicitly (``p[...] = v``, ``set``, ``+=``) are values, as in
    torch, on every backend; only a finite value that overflows the dtype is refused."""
    net = _make(build, "mlp")
    w = net[0].weight
    w[0, 0] = np.nan
    w[1] = np.inf
    net[1].bias.set(np.array([-np.inf], np.float32))
    w += 1.0
    value = w.numpy()
    assert np.isnan(value[0, 0]) and np.isposinf(value[1]).all()
    assert np.isneginf(net[1].bias.numpy()).all()
    assert np.isfinite(value[2:]).all()


@pytest.mark.requires("gradients")
def test_gradients_of_a_layer_handle_are_that_layers_share_of_the_models(build):
    """``gradients(net[0], X)`` runs the whole model and returns layer 0's gradients,
    named relative to it, as ``params(net[0])`` names them."""
    net = _make(build, "mlp")
    x = MODELS["mlp"][1]
    whole = up.gradients(net, x)
    part = up.gradients(net[0], x)
    assert sorted(part) == sorted(up.params(net[0])) == ["bias", "weight"]
    for name, g in part.items():
        np.testing.assert_allclose(g, whole[f"0.{name}"], rtol=1e-6)
