"""Blocks without a framework: ops on numpy, the shape trace, Parameter and Sequential
rules, to_numpy and set_seed (issue 10). Backend behaviour is in the conformance suite
(``unifparam/conformance/test_blocks.py``)."""

import numpy as np
import pytest

import unifparam as up
from unifparam import nn, ops
from unifparam._trace import trace
from unifparam.conformance._helpers import FancyMLP, MyDense, TwoInputs


def test_ops_run_on_numpy_outside_a_forward():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    np.testing.assert_array_equal(ops.relu(x), np.maximum(x, 0))
    assert float(ops.sum(ops.abs(x))) == 10.0
    np.testing.assert_allclose(ops.sum(ops.softmax(x, axis=1), axis=1), [1, 1], rtol=1e-6)
    assert ops.concat([x, x], axis=1).shape == (2, 4)
    assert ops.transpose(ops.reshape(x, (1, 4))).shape == (4, 1)
    assert set(ops.NAMES) <= {n for n in dir(ops)}


def test_trace_gives_every_layer_and_block_parameter_shape():
    traced = trace(TwoInputs(), (3, 4), (3, 6))
    assert traced["left"] == ((3, 4), {"weight": (8, 4), "bias": (8,)})
    assert traced["right"][1]["weight"] == (8, 6)
    assert traced["body.0"][0] == (3, 8)
    assert trace(MyDense(2), (5, 7))[""][1] == {"weight": (2, 7), "bias": (2,)}


def test_abstract_trace_of_a_value_dependent_forward_asks_for_an_example():
    with pytest.raises(up.DataDependentError, match="example input"):
        trace(FancyMLP(), (2, 20))
    ok = trace(FancyMLP(), (2, 20), examples=(np.ones((2, 20), np.float32),))
    assert ok["linear"][1]["weight"] == (20, 20)


def test_a_loop_that_never_ends_on_zeros_is_stopped():
    class Forever(nn.Block):
        def __init__(self):
            super().__init__()
            self.d = nn.Dense(2)

        def forward(self, x):
            x = self.d(x)
            while ops.sum(x) < 1:
                x = x * 2
            return x

    with pytest.raises(up.DataDependentError, match="loop"):
        trace(Forever(), (1, 3), examples=(np.ones((1, 3)),))


def test_a_layer_made_inside_forward_is_refused():
    class Bad(nn.Block):
        def forward(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(up.SpecError, match="attribute"):
        trace(Bad(), (1, 3))


def test_a_shared_layer_fed_two_sizes_is_an_input_shape_error():
    class Two(nn.Block):
        def __init__(self):
            super().__init__()
            self.d = nn.Dense(2)

        def forward(self, a, b):
            return self.d(a) + self.d(b)

    with pytest.raises(up.InputShapeError, match="'d'.*more than once"):
        trace(Two(), (1, 3), (1, 4))


def test_parameter_sizes_only_fill_unknowns():
    p = nn.Parameter((3, None))
    p.shape = (3, 5)
    with pytest.raises(up.SpecError, match="only unknown"):
        p.shape = (4, 5)
    with pytest.raises(up.SpecError, match="positive"):
        nn.Parameter((0, 2))


def test_block_needs_super_init_and_lists_children_in_order():
    class NoInit(nn.Block):
        def __init__(self):
            self.d = nn.Dense(2)

    with pytest.raises(up.SpecError, match="super"):
        NoInit()
    block = FancyMLP()
    assert [k for k, _ in block.children()] == ["linear"]
    assert [k for k, _ in block.own_parameters()] == ["rand_weight"]
    assert "(rand_weight): Parameter((20, 20), role='weight')" in repr(block)


def test_list_attributes_become_sequential():
    class Stack(nn.Block):
        def __init__(self):
            super().__init__()
            self.blocks = [nn.Dense(2), nn.Dense(3)]

        def forward(self, x):
            return self.blocks(x)

    assert isinstance(Stack().blocks, nn.Sequential)
    assert list(trace(Stack(), (1, 4))) == ["", "blocks", "blocks.0", "blocks.1"]


def test_named_sequential():
    net = nn.Sequential({"a": nn.Dense(2)}).add("b", nn.Dense(3)).add(nn.Dense(1))
    assert [k for k, _ in net.children()] == ["a", "b", "2"]
    assert net["b"] is net[1]
    assert "(a): Dense(? -> 2)" in repr(net)
    for bad in ("", "x.y", "a"):
        with pytest.raises(up.SpecError, match="name"):
            net.add(bad, nn.Dense(1))


def test_to_numpy_nested_and_set_seed():
    out = up.to_numpy({"y": [np.float32(1.5)], "z": (np.ones(2),)})
    assert isinstance(out["y"][0], np.ndarray) and out["z"][0].shape == (2,)
    up.set_seed(3)
    try:
        assert up.default_seed() == 3
    finally:
        up.set_seed(None)
    with pytest.raises(TypeError):
        up.set_seed("3")


def test_a_spec_layer_called_outside_a_model_says_to_build_it():
    with pytest.raises(up.SpecError, match="build"):
        nn.Dense(2)(np.ones((1, 2)))
