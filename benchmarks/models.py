"""The benchmark models, described once and built as a unifparam spec or natively.

A model is a nested stack of Dense layers: a tuple ``(units, activation)`` is a layer, a
list is a Sequential. Every builder imports its framework lazily.

    >>> m = MODELS["mlp"]
    >>> m.params, m.nbytes
    (7946, 31784)
    >>> spec(m)                      # a unifparam.nn.Sequential   # doctest: +SKIP
    >>> torch_model(m)               # nn.Sequential of nn.Linear   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Layer = tuple[int, str | None]  # (units, activation)
Stack = list[Any]  # of Layer or Stack


@dataclass(frozen=True)
class ModelDef:
    """A Dense stack: its name, input features, layers, and whether it may be allocated."""

    name: str
    in_features: int
    layers: Stack
    abstract_only: bool = False
    note: str = ""

    @property
    def input_shape(self) -> tuple[int, int]:
        return (1, self.in_features)

    @property
    def params(self) -> int:
        """Number of float32 parameters (weights and biases)."""
        return _count(self.layers, self.in_features)[0]

    @property
    def tensors(self) -> int:
        """Number of parameter tensors (a weight and a bias per Dense layer): ``params()``
        costs are per tensor, not per scalar."""
        return 2 * self.dense_layers

    @property
    def nbytes(self) -> int:
        return 4 * self.params

    @property
    def dense_layers(self) -> int:
        return _count(self.layers, self.in_features)[2]


def _count(stack: Stack, n_in: int) -> tuple[int, int, int]:
    """(parameters, output features, Dense layers) of ``stack`` fed ``n_in`` features."""
    total, layers = 0, 0
    for item in stack:
        if isinstance(item, list):
            p, n_in, k = _count(item, n_in)
            total, layers = total + p, layers + k
        else:
            units = item[0]
            total, n_in, layers = total + n_in * units + units, units, layers + 1
    return total, n_in, layers


def _mlp_chapter() -> Stack:
    return [(256, "relu"), (10, None)]


def _rgnet() -> Stack:
    def block1() -> Stack:
        return [(32, "relu"), (16, "relu")]
    return [[block1() for _ in range(4)], (10, None)]


def _transformer_like(hidden: int, ffn: int, blocks: int, vocab: int = 32000) -> Stack:
    block: Stack = [(hidden, None)] * 4 + [(ffn, "gelu"), (hidden, None)]  # q k v o, MLP
    return [list(block) for _ in range(blocks)] + [(vocab, None)]


MODELS: dict[str, ModelDef] = {m.name: m for m in (
    ModelDef("mlp", 20, _mlp_chapter(), note="Dense 256 relu -> Dense 10 on 20 features"),
    ModelDef("rgnet", 4, _rgnet(), note="the chapters' nested blocks (4 x (32, 16)) -> 10"),
    ModelDef("400m", 1024, [(4096, "relu")] * 24 + [(1000, None)],
             note="MLP 1024 -> 24 x 4096 -> 1000"),
    ModelDef("7b", 4096, _transformer_like(4096, 16384, 34), abstract_only=True,
             note="34 blocks of Dense 4096 x4, 16384, 4096; head 32000"),
    ModelDef("70b", 8192, _transformer_like(8192, 32768, 86), abstract_only=True,
             note="86 blocks of Dense 8192 x4, 32768, 8192; head 32000"),
    ModelDef("params4k", 8, [(8, None)] * 2000, note="2,000 Dense 8 -> 8 (4,000 parameters)"),
)}


# ---- unifparam ------------------------------------------------------------------------
def spec(m: ModelDef) -> Any:
    """The unifparam.nn spec (fresh layer objects, so nothing is tied)."""
    from unifparam import nn

    def conv(item: Any) -> Any:
        if isinstance(item, list):
            return nn.Sequential(*(conv(x) for x in item))
        return nn.Dense(item[0], activation=item[1])
    return conv(m.layers)


# ---- torch ----------------------------------------------------------------------------
def torch_model(m: ModelDef, lazy: bool = False) -> Any:
    """An eager (or LazyLinear) torch nn.Sequential; build under ``torch.device('meta')``
    for the abstract path."""
    import torch.nn as tnn
    acts = {"relu": tnn.ReLU, "gelu": tnn.GELU}

    def conv(item: Any, n_in: int) -> tuple[Any, int]:
        if isinstance(item, list):
            mods = []
            for x in item:
                mod, n_in = conv(x, n_in)
                mods.append(mod)
            return tnn.Sequential(*mods), n_in
        units, act = item
        lin = tnn.LazyLinear(units) if lazy else tnn.Linear(n_in, units)
        return (tnn.Sequential(lin, acts[act]()) if act else lin), units
    return conv(m.layers, m.in_features)[0]


# ---- keras ----------------------------------------------------------------------------
def keras_model(m: ModelDef, kernel_init: Any = None, build: bool = True) -> Any:
    """A keras.Sequential (nested), built for ``(None, in_features)`` unless ``build=False``."""
    import keras

    def conv(item: Any) -> Any:
        if isinstance(item, list):
            return keras.Sequential([conv(x) for x in item])
        return keras.layers.Dense(item[0], activation=item[1],
                                  kernel_initializer=kernel_init or "glorot_uniform")
    model = conv(m.layers)
    if build:
        model.build((None, m.in_features))
    return model


# ---- flax -----------------------------------------------------------------------------
def flax_module(m: ModelDef, kernel_init: Any = None) -> Any:
    """A flax.linen.Sequential (nested); Flax's default kernel init is LeCun normal."""
    import flax.linen as fnn
    acts = {"relu": fnn.relu, "gelu": fnn.gelu}

    def conv(item: Any) -> list[Any]:
        if isinstance(item, list):
            return [fnn.Sequential([y for x in item for y in conv(x)])]
        kw = {"kernel_init": kernel_init} if kernel_init is not None else {}
        dense = fnn.Dense(item[0], **kw)
        return [dense, acts[item[1]]] if item[1] else [dense]
    return conv(m.layers)[0]


def flax_init(m: ModelDef, module: Any, jit: bool = False) -> Any:
    """``module.init`` on a zero input (no jit unless asked); the variables."""
    import jax
    import jax.numpy as jnp
    fn = jax.jit(module.init) if jit else module.init
    return fn(jax.random.key(0), jnp.zeros(m.input_shape, jnp.float32))


def flax_abstract(m: ModelDef, module: Any) -> Any:
    """``jax.eval_shape`` of the module's init: shapes only, no memory."""
    import jax
    import jax.numpy as jnp
    x = jax.ShapeDtypeStruct(m.input_shape, jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)

