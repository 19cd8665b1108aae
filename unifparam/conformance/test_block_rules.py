"""Block rules (issue 26): the first call is a real call, known sizes are known, and every
backend refuses the same non-portable spellings with the portable one. R1-R6."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn, ops

from ._helpers import inputs


class DoublesUntilLarge(nn.Block):
    """A while loop that ends on real values only: zeros for layer outputs never end it."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(8)
        self.out = nn.Dense(3)

    def forward(self, x):
        h = self.hidden(x)
        self.doublings = 0
        while ops.sum(ops.abs(h)) < 100:
            h = h * 2
            self.doublings += 1
        return self.out(h)


class SkipsOnValues(nn.Block):
    """A branch on values choosing which layer (of unknown input size) runs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Dense(4)
        self.small = nn.Dense(5)
        self.large = nn.Dense(6)

    def forward(self, x):
        h = self.a(x)
        return self.large(h) if ops.sum(ops.abs(h)) > 1e6 else self.small(h)


class MyLinear(nn.Block):
    def __init__(self, in_units, units):
        super().__init__()
        self.weight = nn.Parameter((in_units, units))
        self.bias = nn.Parameter((units,))

    def forward(self, x):
        return ops.relu(ops.matmul(x, self.weight) + self.bias)


def test_R1_a_loop_on_values_behaves_on_the_first_call_as_later(build):
    block = DoublesUntilLarge()
    net = build(block)
    up.initialize(net, init.Normal(0.01), seed=0)
    x = inputs(2, 5)
    first = up.to_numpy(net(x))
    n_first = block.doublings
    assert n_first > 0  # the loop ran on real values (zeros would never end it)
    again = up.to_numpy(net(x))
    assert block.doublings == n_first
    np.testing.assert_allclose(first, again, rtol=1e-6)
    v = {n: p.numpy() for n, p in up.params(net).items()}
    h = x @ v["hidden.weight"].T + v["hidden.bias"]
    h = h * 2 ** n_first
    np.testing.assert_allclose(first, h @ v["out.weight"].T + v["out.bias"], rtol=1e-4,
                               atol=1e-5)


def test_R2_a_branch_on_values_sizes_the_layer_it_takes_and_defers_the_other(build):
    net = build(SkipsOnValues())
    y = up.to_numpy(net(inputs(2, 3)))
    assert y.shape == (2, 5)
    states = {n: p.state for n, p in up.params(net).items()}
    assert states["small.weight"] == "materialized" and states["a.weight"] == "materialized"
    assert states["large.weight"] == "deferred"
    assert up.to_numpy(net(inputs(2, 3, seed=1))).shape == (2, 5)


def test_R3_a_block_with_every_size_given_is_materialized_by_initialize(build):
    net = build(MyLinear(5, 3))
    assert net.weight.shape == (5, 3)
    with pytest.raises(up.DeferredParameterError, match=r"shape \(5, 3\) but no values"):
        net.weight.numpy()
    up.initialize(net, init.Normal(0.01), seed=0)
    assert net.weight.state == "materialized" and net.weight.numpy().shape == (5, 3)
    x = inputs(2, 5)
    w, b = net.weight.numpy(), net.bias.numpy()
    np.testing.assert_allclose(up.to_numpy(net(x)), np.maximum(x @ w + b, 0), rtol=1e-5,
                               atol=1e-6)


def test_R4_initialize_overwrites_defaults_by_one_rule_with_or_without_set_seed(build):
    for seed in (None, 3):
        up.set_seed(seed)
        try:
            net = build(nn.Sequential(nn.Dense(4), MyLinear(4, 2)))
            net(inputs(2, 3))
            up.initialize(net, init.Constant(0.5))  # no warning: defaults are not choices
            assert all(np.all(p.numpy() == 0.5) for n, p in up.params(net).items()
                       if n.endswith("weight")), seed
            with pytest.warns(up.AlreadyInitializedWarning):
                up.initialize(net, init.Constant(0.25))
        finally:
            up.set_seed(None)


def _block(assign):
    class Holder(nn.Block):
        def __init__(self):
            super().__init__()
            assign(self)

        def forward(self, x):
            return x
    return Holder


@pytest.mark.parametrize("name", ["train", "params", "forward", "eval", "variables"])
def test_R5_reserved_attribute_names_are_refused_on_every_backend(build, name):
    with pytest.raises(up.SpecError, match=rf"'{name}' is taken.*self\.{name}_"):
        _block(lambda s: setattr(s, name, nn.Dense(2)))()


def test_R5_arrays_and_mixed_lists_are_refused_with_the_portable_spelling(build):
    with pytest.raises(up.SpecTypeError, match=r"'const' holds an array.*nn\.Parameter"):
        _block(lambda s: setattr(s, "const", np.ones((2, 2))))()
    with pytest.raises(up.SpecTypeError, match=r"'layers' mixes layers.*add_module"):
        _block(lambda s: setattr(s, "layers", [nn.Dense(2), 3]))()
    block = _block(lambda s: [s.add_module(str(i), nn.Dense(2)) for i in range(2)])()
    net = build(block)
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def _forward(fn):
    class Uses(nn.Block):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter((3, 3), init=init.Constant(0.1))
            self.d = nn.Dense(3)

        def forward(self, x):
            return fn(self, self.d(x))
    return Uses()


@pytest.mark.parametrize("fn, spelled, fix", [
    (lambda s, x: x @ s.w, "a @ b", "ops.matmul"),
    (lambda s, x: x * float(ops.sum(x)), "float(x)", "compare arrays"),
    (lambda s, x: x.abs(), "x.abs", "ops.abs"),
    (lambda s, x: x.sum(), "x.sum", "ops.sum"),
    (lambda s, x: x.T, "x.T", "ops.transpose"),
], ids=["matmul", "float", "abs", "sum", "T"])
def test_R6_non_portable_array_spellings_are_refused_with_the_ops_spelling(
        build, fn, spelled, fix):
    net = build(_forward(fn))
    with pytest.raises(up.SpecError) as err:
        net(inputs(2, 3))
    assert spelled in str(err.value) and fix in str(err.value)
    assert "_Abstract" not in str(err.value)


def test_R6_ops_make_arrays_the_same_on_every_backend(build):
    net = build(_forward(lambda s, x: (ops.norm(x * 0 + ops.rand((2, 3), seed=0)),
                                       ops.arange(3) + ops.ones(3) + ops.zeros(3))))
    norm, ramp = up.to_numpy(net(inputs(2, 3)))
    expect = np.random.default_rng(0).random((2, 3), np.float32)
    assert norm.shape == ()  # a full reduction is 0-d everywhere (MXNet's is (1,) natively)
    np.testing.assert_allclose(norm, np.linalg.norm(expect), rtol=1e-6)
    np.testing.assert_array_equal(ramp, [1, 2, 3])


def test_G6_arrays_and_a_model_clone_through_files(build, tmp_path):
    net = build(nn.Sequential(nn.Dense(4, activation="relu"), nn.Dense(2)))
    x = inputs(2, 3)
    y = net(x)
    up.save_arrays({"x": x, "y": y}, tmp_path / "xy.safetensors")
    back = up.load_arrays(tmp_path / "xy.safetensors")
    np.testing.assert_array_equal(back["y"], up.to_numpy(y))
    up.save(net, tmp_path / "net.safetensors")
    clone = build(nn.Sequential(nn.Dense(4, activation="relu"), nn.Dense(2)))
    up.load(clone, tmp_path / "net.safetensors")
    np.testing.assert_array_equal(up.to_numpy(clone(x)), up.to_numpy(y))


def test_G2_param_data_reads_and_writes_and_print_shows_values(build):
    net = build(nn.Sequential(nn.Dense(2)))
    net(inputs(1, 3))
    bias = net[0].bias
    bias.data = np.array([1.5, -2.0])
    np.testing.assert_array_equal(bias.data, [1.5, -2.0])
    assert str(bias).splitlines() == [repr(bias), "[ 1.5 -2. ]"]


def test_R1_materialize_and_gradients_run_the_loop_on_real_values_too(build):
    block = DoublesUntilLarge()
    net = build(block)
    x = inputs(2, 5)
    up.materialize(net, x)
    assert net.hidden.weight.state == "materialized" and block.doublings > 0
    grads = up.gradients(net, x)
    assert grads["out.weight"].shape == (3, 8)


def test_R6_a_spelling_after_a_value_test_is_refused_too(build):
    def after_loop(s, x):
        while ops.sum(ops.abs(x)) > 1:
            x = x / 2
        return x.sum()
    net = build(_forward(after_loop))
    with pytest.raises(up.SpecError, match=r"x\.sum.*ops\.sum"):
        net(inputs(2, 3))
