"""Initializer maths and the seeded stream, independent of any backend."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unifparam import InitializerError, init
from unifparam.init import Target, fans


def test_fans_from_logical_axes():
    assert fans((8, 4), ("out", "in")) == (4, 8)
    assert fans((16, 3, 5, 5), ("out", "in", "kh", "kw")) == (75, 400)
    assert fans((10, 4), ("vocab", "embed")) == (4, 10)
    assert fans((7,), ("out",)) == (7, 7)


@pytest.mark.parametrize("initializer, check", [
    (init.XavierUniform(), lambda w, t: np.abs(w).max() <= math.sqrt(6 / (t.fan_in + t.fan_out))),
    (init.KaimingUniform(nonlinearity="relu"),
     lambda w, t: np.abs(w).max() <= math.sqrt(6 / t.fan_in)),
    (init.KaimingNormal(nonlinearity="relu"),
     lambda w, t: abs(w.std() - math.sqrt(2 / t.fan_in)) < 0.05 * math.sqrt(2 / t.fan_in)),
    (init.XavierNormal(), lambda w, t: abs(w.std() - math.sqrt(2 / 600)) < 0.003),
    (init.TruncatedNormal(std=0.1), lambda w, t: np.abs(w).max() <= 0.2 + 1e-7),
    (init.Uniform(5, 10), lambda w, t: w.min() >= 5 and w.max() < 10),
    (init.Default(), lambda w, t: np.abs(w).max() <= 1 / math.sqrt(t.fan_in)),
])
def test_distributions(initializer, check):
    t = Target("w", (200, 400), axes=("out", "in"), fan_in=400, fan_out=200)
    w = initializer.generate(t, seed=0)
    assert w.dtype == np.float32 and w.shape == (200, 400)
    assert check(w, t)


def test_orthogonal_rows_are_orthonormal():
    w = init.Orthogonal().generate(Target("w", (4, 9)), seed=1)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), name=st.text(min_size=1, max_size=20),
       shape=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_seeded_values_depend_only_on_seed_name_shape(seed, name, shape):
    a = init.Normal(std=1.0).generate(Target(name, shape), seed)
    b = init.Normal(std=1.0).generate(Target(name, shape), seed)
    np.testing.assert_array_equal(a, b)
    other = init.Normal(std=1.0).generate(Target(name + "x", shape), seed)
    assert not np.array_equal(a, other) or a.size == 1


def test_large_parameters_use_independent_chunk_streams(monkeypatch):
    t = Target("big", (3, 1000))
    full = init.Uniform(-1, 1).generate(t, seed=3)
    monkeypatch.setattr(init, "CHUNK", 1000)  # each row its own stream
    chunked = init.Uniform(-1, 1).generate(t, seed=3)
    first = init.Uniform(-1, 1).generate(Target("big", (1, 1000)), seed=3)
    np.testing.assert_array_equal(chunked[0], first[0])  # chunk 0 = the unchunked stream start
    assert not np.array_equal(chunked[1], full[1])


def test_validate_rejects_bad_outputs():
    t = Target("0.weight", (2, 2))
    with pytest.raises(InitializerError, match=r"shape \(3,\).*'0\.weight'.*\(2, 2\)"):
        init.validate(t, np.zeros(3), "f")
    with pytest.raises(InitializerError, match="dtype"):
        init.validate(t, np.array([["a", "b"], ["c", "d"]]), "f")
    with pytest.raises(InitializerError, match="non-finite"):
        init.validate(t, np.full((2, 2), np.inf), "f")
    assert init.validate(t, np.ones((2, 2), dtype=np.float64), "f").dtype == np.float32


def test_plain_functions_and_bad_arguments():
    f = init.as_initializer(lambda name, shape, rng: np.zeros(shape))
    assert isinstance(f, init.FunctionInit)
    np.testing.assert_array_equal(f.generate(Target("b", (2,)), 0), np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="instance"):
        init.as_initializer(init.Normal)
    with pytest.raises(TypeError, match="function"):
        init.as_initializer(3)


@pytest.mark.parametrize("size", [10, 3_000_000])  # below and above POPULATE_BYTES
def test_aligned_empty_is_aligned_writable_and_the_right_size(size):
    from unifparam._buffers import aligned_empty
    buf = aligned_empty(size, "float32")
    assert buf.shape == (size,) and buf.dtype == np.float32
    assert buf.ctypes.data % 64 == 0 and buf.flags.writeable and buf.flags.c_contiguous
    buf[:] = 1.5
    assert float(buf.sum()) == 1.5 * size


@pytest.mark.parametrize("shape, perm", [((300, 200), (1, 0)), ((4, 3, 5, 7), (2, 3, 1, 0)),
                                         ((1000,), None), ((64, 65), (1, 0))])
def test_to_layout_equals_numpy_transpose(shape, perm):
    from unifparam._buffers import to_layout
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = to_layout(a, perm, "float32")
    np.testing.assert_array_equal(out, a if perm is None else np.transpose(a, perm))
    assert out.flags.c_contiguous and out.ctypes.data % 64 == 0


def test_normal_takes_one_positional_number_as_the_std():
    assert (init.Normal(0.02).std, init.Normal(0.02).mean) == (0.02, 0.0)
    n = init.Normal(std=0.5, mean=3.0)
    w = n.generate(Target("w", (400, 400)), seed=0)
    assert abs(w.mean() - 3.0) < 0.01 and abs(w.std() - 0.5) < 0.01


@pytest.mark.parametrize("cls", [init.Normal, init.TruncatedNormal])
def test_normal_refuses_pytorchs_mean_first_positional_form(cls):
    # torch.nn.init.normal_(w, 0, 0.01) is mean 0, std 0.01; here it would have been std 0
    with pytest.raises(InitializerError, match=r"ambiguous.*std=0\.01, mean=0\)"):
        cls(0, 0.01)
    with pytest.raises(ValueError):  # InitializerError is a ValueError
        cls(0.0, 0.01)


@pytest.mark.parametrize("make, message", [
    (lambda: init.Normal(std=float("nan")), r"std must be a finite"),
    (lambda: init.Normal(std=-0.1), r"std must be positive"),
    (lambda: init.Normal(0), r"std must be positive.*Constant\(0\.0\)"),
    (lambda: init.Normal(std=1.0, mean=float("inf")), r"mean must be a finite"),
    (lambda: init.TruncatedNormal(std=-1.0), r"TruncatedNormal\(std=-1\.0\)"),
    (lambda: init.Uniform(0, float("inf")), r"high must be a finite"),
    (lambda: init.Uniform(float("nan"), 1), r"low must be a finite"),
    (lambda: init.Uniform(1, 0), r"low must be below high"),
    (lambda: init.Uniform(0.07), r"ambiguous.*Uniform\(-0\.07, 0\.07\)"),
    (lambda: init.Uniform(high=0.5), r"ambiguous"),
    (lambda: init.Constant(float("nan")), r"value must be a finite"),
    (lambda: init.KaimingUniform(mode="fan_avg"), r"mode must be"),
    (lambda: init.KaimingNormal(nonlinearity="swish"), r"Unknown nonlinearity"),
])
def test_initializer_arguments_are_validated(make, message):
    with pytest.raises(InitializerError, match=message):
        make()


def test_uniform_defaults_to_gluons_range():
    u = init.Uniform()
    assert (u.low, u.high) == (-0.07, 0.07)
    assert repr(init.Uniform(-0.1, 0.1)) == "Uniform(low=-0.1, high=0.1)"


def test_init_namespace_lists_only_initializers():
    public = dir(init)
    for leaked in ("np", "math", "dataclass", "Any", "Callable", "aligned_empty", "fmt_shape"):
        assert leaked not in public
    assert set(init.__all__) <= set(public)
    assert {"Normal", "Uniform", "Initializer", "Target", "XavierUniform"} <= set(init.__all__)
