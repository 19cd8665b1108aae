"""PyTorch's own lazy-module semantics, kept through unifparam on adopted models.

Each case mirrors one of PyTorch's ``test/nn/test_lazy_modules.py`` (``TestLazyModules``)
tests, rewritten to go through unifparam; the upstream test is named in each docstring.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter  # noqa: E402

import unifparam as up  # noqa: E402
from unifparam import init  # noqa: E402

X = np.ones((3, 5), np.float32)


def _mlp() -> torch.nn.Module:
    return tnn.Sequential(tnn.LazyLinear(4), tnn.ReLU(), tnn.LazyLinear(2))


# ---- a registered initializer, whoever sizes the model first -----------------------------
def test_native_first_call_applies_the_registered_initializer_before_computing():
    """test_linear (the module's own first call sizes it), with an initializer registered."""
    m = _mlp()
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = m(torch.ones(3, 5))  # torch's own call, as a trainer makes it
        got = {n: p.numpy() for n, p in up.params(net).items()}
    assert isinstance(m[0], tnn.Linear) and not isinstance(m[0], tnn.LazyLinear)
    assert np.all(got["0.weight"] == 0.25) and np.all(got["0.bias"] == 0)
    np.testing.assert_allclose(y.detach().numpy(), np.full((3, 2), 4 * 5 * 0.25 * 0.25))
    assert all(p.state == "materialized" for p in up.params(net).values())
    up.initialize(net, init.Constant(0.5), seed=5, force_reinit=True)  # applied once: no
    assert np.all(up.params(net)["2.weight"].numpy() == 0.5)          # later overwrite
    m(torch.ones(3, 5))
    assert np.all(up.params(net)["2.weight"].numpy() == 0.5)


def test_native_first_call_gives_the_values_unifparam_would_give():
    seeded = [init.Normal(std=0.3), init.XavierUniform()]
    for initializer in seeded:
        a, b = _mlp(), _mlp()
        na, nb = up.build(a), up.build(b)
        up.initialize(na, initializer, seed=7)
        up.initialize(nb, initializer, seed=7)
        a(torch.ones(2, 5))       # torch first
        up.materialize(nb, X)     # unifparam first
        for (n, p), q in zip(up.params(na).items(), up.params(nb).values()):
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_an_initializer_no_hook_could_apply_is_reported_not_dropped():
    """The core's fallback, for adapters without a hook (here: the hook removed by hand)."""
    m = _mlp()
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), seed=5)
    for layer in (m[0], m[2]):
        layer._forward_pre_hooks.clear()  # torch's lazy hook and unifparam's alike
    m[0].weight.materialize((4, 5))  # sized by hand, as a framework might do natively
    m[0].bias.materialize((4,))
    m[2].weight.materialize((2, 4))
    m[2].bias.materialize((2,))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(-1.0)
    with pytest.warns(up.InitializerSkippedWarning, match="'0.weight'.*force_reinit=True"):
        listed = up.params(net)
    assert np.all(listed["0.weight"].numpy() == -1.0)  # the framework's values are kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        up.params(net)  # reported once
    up.initialize(net, init.Constant(0.25), seed=5, force_reinit=True)
    assert np.all(up.params(net)["0.weight"].numpy() == 0.25)


def test_a_copy_of_the_handle_applies_its_own_initializer():
    """test_lazy_linear_pickle: a pickled or deep-copied handle carries its module along."""
    m = _mlp()
    net = up.build(m)
    up.initialize(net, init.Constant(0.25), seed=5)
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert twin.native is not m
        twin.native(torch.ones(2, 3))
        assert np.all(up.params(twin)["0.weight"].numpy() == 0.25)
        assert up.params(twin)["0.weight"].shape == (4, 3)
    assert up.params(net)["0.weight"].state == "deferred"  # the original is untouched


def test_pickle_and_deepcopy_of_a_materialized_handle_are_independent():
    net = up.build(tnn.Sequential(tnn.Linear(3, 2)))
    twin = copy.deepcopy(net)
    twin[0].weight[...] = 1.0
    assert np.all(twin.native[0].weight.detach().numpy() == 1.0)
    assert not np.all(net[0].weight.numpy() == 1.0)
    again = pickle.loads(pickle.dumps(twin))
    np.testing.assert_array_equal(again[0].weight.numpy(), twin[0].weight.numpy())


# ---- trainable flags, read from torch every time -------------------------------------------
def test_requires_grad_changed_after_adoption_is_seen_and_skipped_by_gradients():
    m = tnn.Sequential(tnn.Linear(5, 4), tnn.Linear(4, 2))
    net = up.build(m)
    assert up.params(net)["0.weight"].trainable
    m[0].weight.requires_grad_(False)
    assert up.params(net)["0.weight"].trainable is False
    assert sorted(up.gradients(net, X)) == ["0.bias", "1.bias", "1.weight"]
    m[0].weight.requires_grad_(True)
    assert "0.weight" in up.gradients(net, X)


# ---- materialize: in place, all-or-nothing, dtypes ------------------------------------------
@pytest.mark.parametrize("make", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW,
                                  torch.optim.RMSprop, torch.optim.NAdam])
def test_an_optimizer_made_before_materialize_keeps_working(make):
    """test_optimizer_pass: parameters are materialized in place (same objects)."""
    m = _mlp()
    before = list(m.parameters())
    opt = make(m.parameters(), lr=0.1)
    up.materialize(up.build(m), input_shape=(3, 5))
    assert all(a is b for a, b in zip(before, m.parameters()))
    b = m[2].bias.detach().clone()
    m(torch.ones(3, 5)).sum().backward()  # the output bias's gradient is 3, whatever the ReLU
    opt.step()
    assert not torch.equal(b, m[2].bias.detach())


@pytest.mark.parametrize("lazy, x, shape", [
    (lambda: tnn.LazyConvTranspose1d(32, 2), (1, 5, 4), (5, 32, 2)),
    (lambda: tnn.LazyConvTranspose2d(32, 2), (1, 5, 4, 4), (5, 32, 2, 2)),
    (lambda: tnn.LazyConvTranspose3d(32, 2), (1, 5, 4, 4, 4), (5, 32, 2, 2, 2)),
    (lambda: tnn.LazyConvTranspose2d(32, 2, groups=2), (1, 6, 4, 4), (6, 16, 2, 2)),
])
def test_lazy_transposed_convolutions_list_in_channels_first(lazy, x, shape):
    """test_lazy_conv_transpose1d/2d/3d: torch's weight layout is (in, out // groups, *k)."""
    m = tnn.Sequential(lazy())
    net = up.build(m)
    assert up.params(net)["0.weight"].shape == (None, *shape[1:])
    up.materialize(net, input_shape=x)
    assert tuple(m[0].weight.shape) == shape == up.params(net)["0.weight"].shape


def test_a_failed_materialize_leaves_lazy_modules_lazy():
    m = tnn.Sequential(tnn.LazyLinear(4), tnn.Linear(7, 2))  # 4 features reach a 7-input layer
    w = m[0].weight
    net = up.build(m)
    with pytest.raises(up.InputShapeError, match=r"\(2, 5\)"):
        up.materialize(net, input_shape=(2, 5))
    assert type(m[0]) is tnn.LazyLinear and m[0].weight is w
    assert isinstance(w, UninitializedParameter) and w.device.type == "cpu"
    assert up.params(net)["0.weight"].state == "deferred"
    m[1] = tnn.Linear(4, 2)  # the model is usable as it was
    assert m(torch.ones(2, 5)).shape == (2, 2)


def test_a_failing_initializer_leaves_lazy_modules_lazy():
    m = _mlp()
    net = up.build(m)
    w, hooks = m[0].weight, dict(m[0]._forward_pre_hooks)

    def broken(*args):
        raise RuntimeError("no values today")
    up.initialize(net, broken)
    with pytest.raises(up.InitializerError, match="no values today"):
        up.materialize(net, input_shape=(2, 5))
    assert type(m[0]) is tnn.LazyLinear and m[0].weight is w
    assert isinstance(w, UninitializedParameter) and w.device.type == "cpu"
    assert dict(m[0]._forward_pre_hooks) == hooks and m[0].in_features == 0
    assert up.params(net)["0.weight"].state == "deferred"
    up.initialize(net, init.Constant(0.1))
    m(torch.ones(2, 5))  # torch's own lazy hook still sizes it; the initializer applies
    assert type(m[0]) is tnn.Linear and np.all(up.params(net)["0.weight"].numpy() == 0.1)


def test_materialize_input_shape_uses_the_module_dtype():
    """test_materialize_dtype: a float64 lazy layer is probed with float64 inputs."""
    m = tnn.Sequential(tnn.LazyConv2d(8, 3, dtype=torch.float64))
    net = up.build(m)
    up.materialize(net, input_shape=(1, 3, 8, 8))
    assert m[0].weight.dtype == torch.float64 and tuple(m[0].weight.shape) == (8, 3, 3, 3)
    assert up.params(net)["0.weight"].dtype == "float64"


# ---- load sizes lazy modules from the file, as load_state_dict does -------------------------
def _saved(tmp_path, module: torch.nn.Module) -> str:
    path = str(tmp_path / "m.safetensors")
    up.save(up.build(module), path)
    return path


@pytest.mark.parametrize("eager, lazy", [
    (lambda: tnn.Linear(5, 4), lambda: tnn.LazyLinear(4)),  # test_linear_state
    (lambda: tnn.Linear(5, 4, dtype=torch.float64),
     lambda: tnn.LazyLinear(4, dtype=torch.float64)),
    (lambda: tnn.Conv1d(3, 6, 3), lambda: tnn.LazyConv1d(6, 3)),  # _check_lazy_conv_state
    (lambda: tnn.Conv2d(3, 6, 3), lambda: tnn.LazyConv2d(6, 3)),
    (lambda: tnn.Conv3d(3, 6, 3), lambda: tnn.LazyConv3d(6, 3)),
    (lambda: tnn.ConvTranspose2d(5, 32, 2), lambda: tnn.LazyConvTranspose2d(32, 2)),
    (lambda: tnn.BatchNorm1d(4), lambda: tnn.LazyBatchNorm1d()),  # _check_lazy_batchnorm_state
    (lambda: tnn.BatchNorm2d(4), lambda: tnn.LazyBatchNorm2d()),
    (lambda: tnn.InstanceNorm2d(4, affine=True, track_running_stats=True),
     lambda: tnn.LazyInstanceNorm2d(affine=True, track_running_stats=True)),
    # (_check_lazy_instancenorm_state)
])
def test_load_sizes_a_lazy_module_from_the_file(tmp_path, eager, lazy):
    torch.manual_seed(0)
    src = tnn.Sequential(eager())
    for t in src.state_dict().values():
        if t.is_floating_point():
            t.uniform_()
    path = _saved(tmp_path, src)
    dst = tnn.Sequential(lazy())
    objects = list(dst.parameters())
    up.load(up.build(dst), path)
    assert all(a is b for a, b in zip(objects, dst.parameters()))
    for (n, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert not isinstance(b, (UninitializedParameter, UninitializedBuffer)), n
        assert a.dtype == b.dtype and torch.equal(a, b), n


def test_load_sizes_a_lazy_sequential_and_it_then_runs(tmp_path):
    """test_chained_initialization: every lazy layer of a chain, from one file."""
    src = tnn.Sequential(tnn.Linear(5, 4), tnn.ReLU(), tnn.Linear(4, 2))
    path = _saved(tmp_path, src)
    dst = _mlp()
    up.load(up.build(dst), path)
    torch.testing.assert_close(dst(torch.ones(3, 5)), src(torch.ones(3, 5)))


def test_load_sizes_a_raw_uninitialized_parameter_and_buffer(tmp_path):
    """test_lazy_module_parameter / test_lazy_module_buffer."""
    class Raw(torch.nn.modules.lazy.LazyModuleMixin, tnn.Module):
        def __init__(self, shape=None):
            super().__init__()
            if shape is None:
                self.register_parameter("test_param", UninitializedParameter())
                self.register_buffer("test_buffer", UninitializedBuffer())
            else:
                self.test_param = tnn.Parameter(torch.arange(6.0).reshape(shape))
                self.register_buffer("test_buffer", torch.ones(shape))

    path = _saved(tmp_path, Raw((2, 3)))
    dst = Raw()
    up.load(up.build(dst), path)
    assert torch.equal(dst.test_param.detach(), torch.arange(6.0).reshape(2, 3))
    assert torch.equal(dst.test_buffer, torch.ones(2, 3))


LAZY = [  # (lazy module, its eager twin, input shape): _check_lazy_conv, _check_lazy_norm
    (lambda: tnn.LazyLinear(4), lambda: tnn.Linear(5, 4), (2, 5)),
    (lambda: tnn.LazyConv1d(6, 3), lambda: tnn.Conv1d(3, 6, 3), (2, 3, 8)),
    (lambda: tnn.LazyConv2d(6, 3), lambda: tnn.Conv2d(3, 6, 3), (2, 3, 8, 8)),
    (lambda: tnn.LazyConv3d(6, 3), lambda: tnn.Conv3d(3, 6, 3), (2, 3, 5, 5, 5)),
    (lambda: tnn.LazyConvTranspose1d(6, 3), lambda: tnn.ConvTranspose1d(3, 6, 3), (2, 3, 8)),
    (lambda: tnn.LazyConvTranspose2d(6, 3), lambda: tnn.ConvTranspose2d(3, 6, 3), (2, 3, 8, 8)),
    (lambda: tnn.LazyConvTranspose3d(6, 3), lambda: tnn.ConvTranspose3d(3, 6, 3),
     (2, 3, 5, 5, 5)),
    (lambda: tnn.LazyBatchNorm1d(), lambda: tnn.BatchNorm1d(3), (2, 3)),
    (lambda: tnn.LazyBatchNorm2d(), lambda: tnn.BatchNorm2d(3), (2, 3, 4, 4)),
    (lambda: tnn.LazyBatchNorm3d(), lambda: tnn.BatchNorm3d(3), (2, 3, 4, 4, 4)),
    (lambda: tnn.LazyInstanceNorm1d(affine=True, track_running_stats=True),
     lambda: tnn.InstanceNorm1d(3, affine=True, track_running_stats=True), (2, 3, 8)),
    (lambda: tnn.LazyInstanceNorm2d(affine=True, track_running_stats=True),
     lambda: tnn.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 4, 4)),
    (lambda: tnn.LazyInstanceNorm3d(affine=True, track_running_stats=True),
     lambda: tnn.InstanceNorm3d(3, affine=True, track_running_stats=True), (2, 3, 4, 4, 4)),
]


@pytest.mark.parametrize("lazy, eager, x", LAZY)
def test_materialize_turns_a_lazy_module_into_its_eager_class(lazy, eager, x):
    """_check_lazy_conv / _check_lazy_norm: shapes and class as torch's own first call."""
    m, reference = tnn.Sequential(lazy()), eager()
    net = up.build(m)
    up.materialize(net, input_shape=x)
    assert type(m[0]) is type(reference)
    for name, t in reference.state_dict().items():
        assert getattr(m[0], name).shape == t.shape, name
    assert m(torch.ones(x)).shape == reference(torch.ones(x)).shape


@pytest.mark.parametrize("lazy, eager, x", LAZY)
def test_a_pickled_lazy_handle_materializes_on_its_own(lazy, eager, x):
    """_check_lazy_conv_pickle / _check_lazy_norm_pickle: a lazy module pickles, and the
    unpickled one is still lazy; through unifparam the handle does too."""
    net = up.build(tnn.Sequential(lazy()))
    twin = pickle.loads(pickle.dumps(net))
    assert isinstance(twin.native[0], torch.nn.modules.lazy.LazyModuleMixin)
    up.initialize(twin, init.Constant(0.5))
    twin.native(torch.ones(x))  # torch's own call sizes it; the initializer applies
    assert all(p.state == "materialized" for p in up.params(twin).values())
    assert all(p.state == "deferred" for p in up.params(net).values())
    weight = up.params(twin)["0.weight"]
    expected = 0.5 if weight.role == "weight" else 1.0  # a norm's scale: its role's 1
    assert np.all(weight.numpy() == expected)
