"""Custom blocks (issue 10): B1-B4. Same names, same seeded values, outputs matching numpy."""

from functools import partial

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn, ops

from ._helpers import FancyMLP, MyDense, TwoInputs, inputs, reference_mlp

TOL = {"rtol": 1e-4, "atol": 1e-5}


def _values(net):
    return {n: p.numpy() for n, p in up.params(net).items()}


def _dense(v, prefix, x):
    return x @ v[f"{prefix}.weight"].T + v[f"{prefix}.bias"]


def test_B1_fancy_mlp_lists_the_shared_layer_once_and_agrees_with_numpy(build):
    net = build(FancyMLP())
    x = inputs(2, 20)
    up.initialize(net, seed=0)
    y = up.to_numpy(net(x))
    assert list(up.params(net)) == ["rand_weight", "linear.weight", "linear.bias"]
    assert up.params(net)["rand_weight"].trainable is False
    v = _values(net)
    h = np.maximum(_dense(v, "linear", x) @ v["rand_weight"] + 1, 0)
    h = _dense(v, "linear", h)
    while np.abs(h).sum() > 1:
        h = h / 2
    np.testing.assert_allclose(y, h.sum(), **TOL)
    assert 0 <= v["rand_weight"].min() and v["rand_weight"].max() <= 1


def test_B1_fancy_mlp_seeded_values_do_not_depend_on_the_backend(build):
    up.set_seed(7)
    try:
        net = build(FancyMLP())
        net(inputs(2, 20))
        got = _values(net)
    finally:
        up.set_seed(None)
    target = init.Target("rand_weight", (20, 20), "float32", "weight", ("out", "in"), 20, 20)
    np.testing.assert_array_equal(got["rand_weight"], init.Uniform(0, 1).generate(target, 7))
    bound = 1 / np.sqrt(20)
    assert np.abs(got["linear.weight"]).max() <= bound


@pytest.mark.requires("abstract")
def test_B1_fancy_mlp_abstract_materialization_asks_for_an_example(build):
    net = build(FancyMLP())
    with pytest.raises(up.DataDependentError, match="example input"):
        up.materialize(net, input_shape=(2, 20), abstract=True)
    assert net.rand_weight.state != "materialized"
    up.materialize(net, inputs(2, 20))
    assert net.linear.weight.shape == (20, 20)


@pytest.mark.parametrize("in_units", [5, None])
def test_B2_my_dense_own_parameters(build, in_units):
    net = build(MyDense(3, in_units))
    assert [(n, p.shape) for n, p in up.params(net).items()] == [("weight", (3, in_units)),
                                                                 ("bias", (3,))]
    up.initialize(net, init.Normal(std=1.0), seed=0)
    x = inputs(4, 5)
    y = up.to_numpy(net(x))
    v = _values(net)
    assert v["weight"].shape == (3, 5)
    np.testing.assert_array_equal(v["bias"], np.zeros(3, np.float32))  # a bias's role default
    np.testing.assert_allclose(y, np.maximum(x @ v["weight"].T + v["bias"], 0), **TOL)


@pytest.mark.requires("abstract")
def test_B2_my_dense_abstract_materialization_from_a_shape(build):
    net = build(MyDense(3))
    up.materialize(net, input_shape=(2, 7), abstract=True)
    assert net.weight.shape == (3, 7)


def test_B2_a_block_used_twice_is_one_set_of_storages(build):
    block = MyDense(5)
    net = build(nn.Sequential(nn.Dense(5), block, block))
    x = inputs(3, 4)
    y = up.to_numpy(net(x))
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    # both uses compute with the same parameters
    want = reference_mlp(_values(net), [("0", None), ("1", "relu"), ("1", "relu")], x)
    np.testing.assert_allclose(y, want, **TOL)
    net[2].bias[0] = 7.0
    assert net[1].bias[0] == 7.0


def test_B3_named_nested_blocks_names_in_parameters_and_printout(build):
    seq = nn.Sequential()
    for i in range(2):
        seq.add(f"block {i}", nn.Sequential({"hidden": nn.Dense(8, activation="relu"),
                                             "out": nn.Dense(4)}))
    net = build(seq)
    up.initialize(net, init.Normal(std=0.5), seed=1)
    x = inputs(2, 3)
    y = up.to_numpy(net(x))
    assert list(up.params(net)) == [f"block {i}.{k}.{p}" for i in range(2)
                                    for k in ("hidden", "out") for p in ("weight", "bias")]
    text = repr(net)
    assert "(block 0): Sequential(" in text and "(hidden): Dense(3 -> 8, relu)" in text
    v, h = _values(net), x
    for i in range(2):
        h = _dense(v, f"block {i}.out", np.maximum(_dense(v, f"block {i}.hidden", h), 0))
    np.testing.assert_allclose(y, h, **TOL)


def test_B4_two_inputs_tied_body(build):
    net = build(TwoInputs())
    up.initialize(net, init.Normal(std=0.5), seed=2)
    a, b = inputs(3, 4), inputs(3, 6, seed=1)
    y = up.to_numpy(net(a, b))
    assert list(up.params(net)) == ["left.weight", "left.bias", "right.weight", "right.bias",
                                    "body.0.weight", "body.0.bias", "body.1.weight",
                                    "body.1.bias"]
    v = _values(net)

    def body(h):
        return _dense(v, "body.1", np.maximum(_dense(v, "body.0", h), 0))

    expected = np.concatenate([body(_dense(v, "left", a)), body(_dense(v, "right", b))], 1)
    np.testing.assert_allclose(y, expected, **TOL)
    assert y.shape == (3, 2)


class _EveryOp(nn.Block):
    """One portable op (``unifparam.ops``) applied in a forward, with a weight to read."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.weight = nn.Parameter((3, 4), init=init.Constant(0.5))

    def forward(self, x):
        return _OPS[self.op](x, self.weight)


def _reduce(name, axis, x, w):
    return getattr(ops, name)(x, axis=axis, keepdims=axis == 0)


def _unary(name, x, w):
    return getattr(ops, name)(x)


_OPS = {
    "matmul": lambda x, w: ops.matmul(x, ops.transpose(w)),
    "transpose": lambda x, w: ops.transpose(ops.reshape(x, (2, 2, 3)), (2, 0, 1)),
    "reshape": lambda x, w: ops.reshape(x, (4, -1)),
    "concat": lambda x, w: ops.concat([x, x * 2], axis=1),
    **{f"{r}{a}": partial(_reduce, r, a) for r in ("sum", "mean", "max", "min")
       for a in (None, 0, 1)},
    **{u: partial(_unary, u) for u in ("abs", "exp", "tanh", "relu", "sigmoid", "gelu",
                                        "square", "zeros_like", "ones_like")},
    "log": lambda x, w: ops.log(ops.abs(x) + 1),
    "sqrt": lambda x, w: ops.sqrt(ops.abs(x)),
    "softmax": lambda x, w: ops.softmax(x, axis=0),
    "maximum": lambda x, w: ops.maximum(x, 0.25) + ops.maximum(0.5, x),
    "minimum": lambda x, w: ops.minimum(x, w[0]) + ops.minimum(-0.5, x),
    "where": lambda x, w: ops.where(ops.greater(x, 0), x, 0.0) + ops.where(
        ops.less(x, 0.1), 1.0, x) + ops.where(ops.equal(x, x), x, x),
}


@pytest.mark.parametrize("op", sorted(_OPS))
def test_B5_every_portable_op_agrees_with_numpy(build, op):
    x = inputs(2, 6 if op == "transpose" else 4) - 0.5
    net = build(_EveryOp(op))
    up.initialize(net, seed=0)
    got = np.asarray(up.to_numpy(net(x)), np.float64)
    want = np.asarray(_OPS[op](x, np.full((3, 4), 0.5, np.float32)), np.float64)
    if got.shape != want.shape and got.size == want.size == 1:  # MXNet: (1,) for a scalar
        got = got.reshape(want.shape)
    np.testing.assert_allclose(got, want, **TOL)
