"""Precision on the backend under test: every scenario that makes sense per dtype, run in
float32, bfloat16 and float16 (docs/precision.md).

Seeded values in any dtype are the float32 stream rounded to nearest even, so they are
bit-identical on every backend; outputs are compared with a numpy reference within the
dtype's tolerance. A dtype the backend cannot store is a typed refusal
(``test_a_dtype_the_backend_cannot_store_is_a_typed_refusal``); an adapter lists the
scenarios it cannot run in its ``expected_failures.txt``.
"""

import numpy as np
import pytest

import unifparam as up
from unifparam import dtypes, init, nn

from ._helpers import inputs, reference_mlp

DTYPES = ["float32", "bfloat16", "float16"]
#: relative tolerance of an output computed in each dtype against float32 maths
TOL = {"float32": 1e-5, "bfloat16": 4e-2, "float16": 5e-3}


def mlp():
    return nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3))


def norms():
    return nn.Sequential(nn.Dense(16), nn.LayerNorm(), nn.Dense(4))


def _bits(a):
    return np.asarray(a).view(np.dtype(f"u{np.asarray(a).dtype.itemsize}"))


def _seeded(build, spec, x, dtype=None, seed=0):
    net = build(spec) if dtype is None else build(spec, dtype=dtype)
    up.initialize(net, init.Normal(std=0.5), seed=seed)
    up.materialize(net, x)
    return net


def test_a_dtype_the_backend_cannot_store_is_a_typed_refusal(backend, build):
    refused = [d for d in dtypes.FLOATS if d not in up.get_backend(backend).storage_dtypes]
    for dtype in refused:  # MXNet: bfloat16 and float8
        with pytest.raises(up.UnsupportedError, match=dtype):
            build(mlp(), dtype=dtype)
    net = _seeded(build, mlp(), inputs(2, 4))
    before = {n: p.numpy() for n, p in up.params(net).items()}
    for dtype in refused:
        with pytest.raises(up.UnsupportedError, match=dtype):
            up.cast(net, dtype)
    for n, p in up.params(net).items():  # a refused cast changes nothing
        assert p.dtype == "float32"
        np.testing.assert_array_equal(p.numpy(), before[n])


@pytest.mark.parametrize("dtype", DTYPES)
def test_build_stores_every_parameter_in_its_dtype(build, dtype):
    net = build(mlp(), dtype=dtype)
    assert {p.dtype for p in up.params(net).values()} == {dtype}  # before shapes are known
    up.materialize(net, inputs(2, 4))
    for name, p in up.params(net).items():
        assert p.dtype == dtype, name
        assert p.numpy().dtype == dtypes.numpy_dtype(dtype), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_seeded_values_are_the_float32_stream_rounded(build, dtype):
    x = inputs(2, 4)
    ref = _seeded(build, mlp(), x)
    net = _seeded(build, mlp(), x, dtype)
    for name, p in up.params(net).items():
        expected = up.params(ref)[name].numpy().astype(dtypes.numpy_dtype(dtype))
        np.testing.assert_array_equal(_bits(p.numpy()), _bits(expected), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_are_written_and_read_in_their_dtype(build, dtype):
    net = _seeded(build, mlp(), inputs(2, 4), dtype)
    w = up.params(net)["0.weight"]
    value = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4) / 3
    w[...] = value
    np.testing.assert_array_equal(_bits(w.numpy()), _bits(value.astype(dtypes.numpy_dtype(dtype))))
    w[0, 0] = 1.3  # rounded to nearest even in the parameter's dtype
    assert w.numpy()[0, 0] == np.float32(1.3).astype(dtypes.numpy_dtype(dtype))
    w += 1.0
    assert w.numpy().dtype == dtypes.numpy_dtype(dtype)


def test_a_value_that_overflows_float16_is_refused(build):
    net = _seeded(build, mlp(), inputs(2, 4), "float16")
    w = up.params(net)["0.weight"]
    before = w.numpy()
    with pytest.raises(up.ArgumentValueError, match="overflows float16"):
        w[0, 0] = 70000.0
    np.testing.assert_array_equal(w.numpy(), before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_computes_in_the_dtype(build, dtype):
    x = inputs(3, 4)
    net = _seeded(build, mlp(), x, dtype)
    out = up.to_numpy(net(x))
    values = {n: p.numpy().astype(np.float32) for n, p in up.params(net).items()}
    expected = reference_mlp(values, [("0", "tanh"), ("1", None)], x)
    assert dtypes.of(out) == dtype
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=TOL[dtype],
                               atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_in_the_dtype_match_float32(build, dtype):
    x = inputs(3, 4)
    grads = up.gradients(_seeded(build, mlp(), x, dtype), x)
    ref = up.gradients(_seeded(build, mlp(), x), x)
    for name, g in ref.items():
        np.testing.assert_allclose(np.asarray(grads[name]).astype(np.float32), g,
                                   rtol=4 * TOL[dtype], atol=4 * TOL[dtype], err_msg=name)


def _stored(path):
    """name -> (safetensors dtype code, raw bytes) of a safetensors file, read by hand."""
    import json
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_checkpoint_round_trip_is_byte_exact(build, dtype, tmp_path):
    x = inputs(3, 4)
    net = _seeded(build, norms(), x, dtype)
    path = tmp_path / "net.safetensors"
    up.save(net, path)
    stored = _stored(path)
    for name, p in up.params(net).items():  # the file holds the dtype's own bytes
        bits = _bits(p.numpy())
        assert stored[name] == (dtypes.CODES[dtype], bits.astype(bits.dtype.newbyteorder("<")
                                                                 ).tobytes()), name
    other = build(norms(), dtype=dtype)
    report = up.load(other, path)
    assert report.cast == ()
    for name, p in up.params(net).items():
        np.testing.assert_array_equal(_bits(up.params(other)[name].numpy()), _bits(p.numpy()),
                                      err_msg=name)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_load_casts_to_the_model_dtype_and_reports_it(build, dtype, tmp_path):
    x = inputs(3, 4)
    net = _seeded(build, mlp(), x, dtype)
    path = tmp_path / "net.safetensors"
    up.save(net, path)
    wide = build(mlp())
    report = up.load(wide, path)
    assert sorted(report.cast) == sorted((n, dtype, "float32") for n in up.params(net))
    for name, p in up.params(net).items():
        assert up.params(wide)[name].dtype == "float32"
        np.testing.assert_array_equal(up.params(wide)[name].numpy(),
                                      p.numpy().astype(np.float32), err_msg=name)
    strict = _seeded(build, mlp(), x)
    before = {n: p.numpy() for n, p in up.params(strict).items()}
    with pytest.raises(up.CheckpointMismatchError, match="cast=False"):
        up.load(strict, path, cast=False)
    for name, p in up.params(strict).items():  # nothing was loaded
        np.testing.assert_array_equal(p.numpy(), before[name])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cast_keeps_names_ties_and_trainable_flags(build, dtype):
    spec = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3, activation="relu"),
                         nn.Dense(8, activation="tanh"), nn.Dense(4))
    net = build(spec)
    up.tie(net, "0.weight", "3.weight", transpose=True)
    x = inputs(2, 4)
    up.initialize(net, init.Normal(std=0.5), seed=1)
    up.materialize(net, x)
    before = {n: (p.numpy(), p.aliases, p.trainable) for n, p in up.params(net).items()}
    assert up.cast(net, dtype) is net
    after = up.params(net)
    assert list(after) == list(before)
    for name, p in after.items():
        value, aliases, trainable = before[name]
        assert (p.dtype, p.aliases, p.trainable) == (dtype, aliases, trainable), name
        np.testing.assert_array_equal(
            _bits(p.numpy()), _bits(value.astype(dtypes.numpy_dtype(dtype))), err_msg=name)
    after["0.weight"][0, 1] = 0.5  # the tie still holds: one storage
    assert float(up.params(net["3"])["weight"].numpy()[1, 0]) == 0.5
    out = up.to_numpy(net(x))
    assert out.shape == (2, 4) and np.isfinite(out.astype(np.float32)).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_policy_stores_float32_and_computes_in_the_dtype(build, dtype):
    x = inputs(3, 4)
    net = _seeded(build, mlp(), x, f"mixed_{dtype}")
    assert {p.dtype for p in up.params(net).values()} == {"float32"}
    out = up.to_numpy(net(x))
    assert dtypes.of(out) == dtype
    values = {n: p.numpy() for n, p in up.params(net).items()}
    expected = reference_mlp(values, [("0", "tanh"), ("1", None)], x)
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=TOL[dtype],
                               atol=TOL[dtype])
    grads = up.gradients(net, x)
    assert {dtypes.of(g) for g in grads.values()} == {"float32"}  # into float32 storage


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_per_pattern_dtypes(build, dtype):
    x = inputs(3, 4)
    net = _seeded(build, norms(), x, {"1.*": "float32", "*": dtype})
    got = {n: p.dtype for n, p in up.params(net).items()}
    assert got == {"0.weight": dtype, "0.bias": dtype, "1.weight": "float32",
                   "1.bias": "float32", "2.weight": dtype, "2.bias": dtype}
    assert np.isfinite(up.to_numpy(net(x)).astype(np.float32)).all()


def test_bad_dtypes_are_refused_before_any_change(build):
    net = _seeded(build, mlp(), inputs(2, 4))
    before = {n: p.numpy() for n, p in up.params(net).items()}
    with pytest.raises(up.ArgumentError, match="float12"):
        up.cast(net, "float12")
    with pytest.raises(up.UnknownNameError, match="nope"):
        up.cast(net, {"nope.*": "float16"})
    with pytest.raises(up.ArgumentValueError, match="whole model"):
        up.cast(net, {"0.*": "mixed_bfloat16"})
    for n, p in up.params(net).items():
        assert p.dtype == "float32"
        np.testing.assert_array_equal(p.numpy(), before[n])
