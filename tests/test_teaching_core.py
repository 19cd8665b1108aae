"""Teaching helpers without a framework: arrays in one file, Param.data, printing a
parameter, the block rules and ops' array makers (issue 26)."""

import numpy as np
import pytest

import unifparam as up
from unifparam import _blockrules, nn, ops


def test_save_arrays_round_trips_an_array_a_list_and_a_dict(tmp_path):
    x = np.arange(4)
    up.save_arrays(x, tmp_path / "x")
    got = up.load_arrays(tmp_path / "x")
    assert got.dtype == x.dtype and np.array_equal(got, x)
    xs = [np.arange(4, dtype=np.float32), np.zeros((2, 3), np.float32)]
    up.save_arrays(xs, tmp_path / "xs")
    back = up.load_arrays(tmp_path / "xs")
    assert isinstance(back, list) and [b.shape for b in back] == [(4,), (2, 3)]
    up.save_arrays({"x": x, "y": np.ones(2)}, tmp_path / "d")
    d = up.load_arrays(tmp_path / "d")
    assert list(d) == ["x", "y"] and np.array_equal(d["y"], [1, 1])


def test_save_arrays_refuses_nesting_and_odd_keys_before_writing(tmp_path):
    with pytest.raises(up.ArgumentError, match="one level"):
        up.save_arrays([[np.ones(2)]], tmp_path / "n")
    with pytest.raises(up.ArgumentError, match="keys must be non-empty str"):
        up.save_arrays({1: np.ones(2)}, tmp_path / "k")
    assert not list(tmp_path.iterdir())


def test_save_of_an_array_points_at_save_arrays(tmp_path):
    with pytest.raises(up.UnsupportedError, match=r"save_arrays") as err:
        up.save(np.arange(4), tmp_path / "x")
    assert "Wrap native" not in str(err.value)


def test_reserved_names_cover_every_backend_and_the_block_itself():
    assert {"train", "eval", "to", "params", "variables", "forward", "build", "name",
            "collect_params", "hybridize"} <= _blockrules.RESERVED
    assert {m for m in dir(nn.Block) if not m.startswith("_") and callable(
        getattr(nn.Block, m))} - {"add_module"} <= _blockrules.RESERVED


def test_a_dict_of_layers_is_a_named_sequential_and_add_module_takes_runtime_names():
    class Net(nn.Block):
        def __init__(self):
            super().__init__()
            self.blocks = {"first": nn.Dense(2), "second": nn.Dense(3)}
            for i in range(2):
                self.add_module(f"extra{i}", nn.Dense(1))
    net = Net()
    assert [k for k, _ in net.children()] == ["blocks", "extra0", "extra1"]
    assert [k for k, _ in net.blocks.children()] == ["first", "second"]
    with pytest.raises(up.SpecTypeError, match="takes a layer"):
        net.add_module("x", 3)


def test_ops_make_the_same_arrays_outside_a_forward():
    np.testing.assert_array_equal(ops.rand((2, 2), seed=1),
                                  np.random.default_rng(1).random((2, 2), np.float32))
    assert ops.randn(3, seed=0).dtype == np.float32
    np.testing.assert_array_equal(ops.arange(1, 4), [1, 2, 3])
    assert ops.zeros((2, 1)).shape == (2, 1) and float(ops.full(2, 3)[0]) == 3.0
    assert float(ops.norm(np.array([[3.0, 4.0]]))) == 5.0
    np.testing.assert_allclose(ops.norm(np.array([[3.0, 4.0], [0, 1]]), axis=1), [5, 1])
