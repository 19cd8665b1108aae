"""Precision: the dtype vocabulary, every safetensors dtype in files, and torch models
adopted in bfloat16/float16/float8 (every verb), a bf16 Hugging Face model, and a bf16
file written by safetensors loaded on flax and keras:jax with equal values."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import unifparam as up
from unifparam import _ckptfile, dtypes, init

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

X = np.random.default_rng(0).random((3, 4), dtype=np.float32)
HALF = [torch.bfloat16, torch.float16]


def _bits(a):
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 2)).to(dtype)


# ---- the vocabulary -------------------------------------------------------------------------
@pytest.mark.parametrize("given, name", [
    ("bf16", "bfloat16"), ("half", "float16"), ("F8_E4M3", "float8_e4m3fn"),
    ("torch.float8_e5m2", "float8_e5m2"), (np.float64, "float64"), ("BOOL", "bool"),
    (np.dtype("int8"), "int8"), (float, "float32"), ("U16", "uint16")])
def test_canonical_names(given, name):
    assert dtypes.canonical(given) == name


def test_framework_dtype_objects_have_canonical_names():
    import jax.numpy as jnp
    assert [dtypes.canonical(d) for d in (torch.bfloat16, torch.half, torch.float8_e4m3fn,
                                          jnp.bfloat16, ml_dtypes.float8_e5m2, torch.int64)] \
        == ["bfloat16", "float16", "float8_e4m3fn", "bfloat16", "float8_e5m2", "int64"]


def test_every_safetensors_code_has_a_numpy_type():
    assert set(dtypes.CODES.values()) == {"F64", "F32", "BF16", "F16", "F8_E4M3", "F8_E5M2",
                                          "I64", "I32", "I16", "I8", "U64", "U32", "U16",
                                          "U8", "BOOL"}
    for name in dtypes.NAMES:
        assert dtypes.numpy_dtype(name).name == name


def test_unknown_dtype_is_a_typed_error():
    with pytest.raises(up.ArgumentError, match="float12"):
        dtypes.canonical("float12")


def test_cast_rounds_to_nearest_even_and_integer_casts_are_exact():
    one_plus = np.float32(1 + 2 ** -8)  # halfway between two bfloat16 values: even wins
    assert dtypes.cast(np.array([one_plus]), "bfloat16")[0] == 1.0
    np.testing.assert_array_equal(dtypes.cast(np.array([1.0, -2.0]), "int8"), [1, -2])
    with pytest.raises(up.ArgumentValueError, match="int8"):
        dtypes.cast(np.array([0.5]), "int8")
    with pytest.raises(up.ArgumentValueError, match="int8"):
        dtypes.cast(np.array([300.0]), "int8")


def test_policies():
    assert dtypes.policy("mixed_bfloat16") == dtypes.Policy("float32", "bfloat16")
    keras = pytest.importorskip("keras")
    assert dtypes.policy(keras.DTypePolicy("mixed_float16")) == dtypes.Policy("float32",
                                                                              "float16")


# ---- files -------------------------------------------------------------------------------
ALL = ["float64", "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "int64",
       "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool"]


def _sample(name, shape=(3, 5)):
    values = np.random.default_rng(1).normal(size=shape) * 4
    if name == "bool":
        return values > 0
    if name.startswith("uint"):
        return np.abs(values).astype(name)
    return values.astype(dtypes.numpy_dtype(name))


def test_every_dtype_is_written_byte_exactly_and_safe_open_reads_it(tmp_path):
    arrays = {f"t_{name}": _sample(name) for name in ALL}
    path = tmp_path / "all.safetensors"
    _ckptfile.write(path, arrays, {"format": "pt"})
    with safe_open(str(path), "pt") as f:
        for key, value in arrays.items():
            got = f.get_tensor(key)
            assert str(got.dtype).removeprefix("torch.") == value.dtype.name, key
            raw = got.view(torch.uint8) if got.dtype != torch.bool else got.to(torch.uint8)
            assert raw.numpy().tobytes() == value.tobytes(), key


def test_every_dtype_written_by_safetensors_is_read_byte_exactly(tmp_path):
    tensors = {}
    for name in ALL:
        value = _sample(name)
        extension = name in dtypes.EXTENSIONS  # torch.from_numpy refuses ml_dtypes arrays
        t = torch.from_numpy(value.view(np.uint8) if extension else value)
        tensors[f"t_{name}"] = t.view(getattr(torch, name)) if extension else t
    path = tmp_path / "st.safetensors"
    save_file(tensors, str(path))
    read = _ckptfile.read(path).arrays()
    for name in ALL:
        assert read[f"t_{name}"].dtype.name == name
        assert read[f"t_{name}"].tobytes() == _sample(name).tobytes(), name


# ---- adopted torch models ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [*HALF, torch.float8_e4m3fn, torch.float8_e5m2])
def test_adopted_model_in_any_float_dtype_takes_every_verb(dtype, tmp_path):
    name = str(dtype).removeprefix("torch.")
    module = _mlp(dtype)
    net = up.build(module)
    assert {p.dtype for p in up.params(net).values()} == {name}
    up.initialize(net, init.Normal(std=0.5), seed=0, force_reinit=True)
    wide = up.build(_mlp())
    up.initialize(wide, init.Normal(std=0.5), seed=0, force_reinit=True)
    for n, p in up.params(net).items():  # the float32 stream, rounded to nearest even
        assert p.numpy().dtype.name == name
        np.testing.assert_array_equal(
            _bits(p.numpy()), _bits(up.params(wide)[n].numpy().astype(dtypes.numpy_dtype(name))))
    w = up.params(net)["0.weight"]
    w[0, 0] = 0.3
    assert w.numpy()[0, 0] == np.float32(0.3).astype(dtypes.numpy_dtype(name))
    assert module[0].weight.dtype == dtype
    path = tmp_path / "m.safetensors"
    up.save(net, path)
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("0.weight").dtype == dtype
        assert torch.equal(f.get_tensor("0.weight").view(torch.uint8),
                           module[0].weight.detach().view(torch.uint8))
    other = up.build(_mlp(dtype, seed=1))
    assert up.load(other, path).cast == ()
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(_bits(up.params(other)[n].numpy()), _bits(p.numpy()))


@pytest.mark.parametrize("dtype", HALF)
def test_adopted_half_model_computes_differentiates_and_shards_to_disk(dtype, tmp_path):
    net = up.build(_mlp(dtype))
    out = net(X)
    assert out.dtype == dtype
    grads = up.gradients(net, X)
    assert grads["0.weight"].dtype == dtypes.numpy_dtype(str(dtype).removeprefix("torch."))
    up.save_sharded(net, tmp_path / "sharded")
    other = up.build(_mlp(dtype, seed=1))
    up.load_sharded(other, tmp_path / "sharded")
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(_bits(up.params(other)[n].numpy()), _bits(p.numpy()))


def test_a_file_written_by_safetensors_torch_loads_and_inspects(tmp_path):
    module = _mlp(torch.bfloat16)
    path = tmp_path / "st.safetensors"
    save_file(module.state_dict(), str(path))
    assert "bfloat16" in up.inspect_file(path)
    net = up.build(_mlp(torch.bfloat16, seed=1))
    assert up.load(net, path).loaded
    assert torch.equal(net.native[0].weight, module[0].weight)
    wide = up.build(_mlp(seed=1))
    report = up.load(wide, path)
    assert ("0.weight", "bfloat16", "float32") in report.cast
    assert torch.equal(wide.native[0].weight, module[0].weight.float())
    assert "cast=['0.weight: bfloat16->float32'" in repr(report)


def test_the_handle_follows_the_frameworks_own_cast(tmp_path):
    module = _mlp()
    net = up.build(module)
    module.to(torch.float64)
    assert {p.dtype for p in up.params(net).values()} == {"float64"}
    assert up.params(net)["0.weight"].numpy().dtype == np.float64
    assert net(X).dtype == torch.float64
    up.save(net, tmp_path / "f64.safetensors")
    with safe_open(str(tmp_path / "f64.safetensors"), "pt") as f:
        assert f.get_tensor("0.weight").dtype == torch.float64


def test_portable_cast_keeps_the_parameter_objects_and_trainable_flags():
    module = _mlp()
    module[2].bias.requires_grad_(False)
    weight = module[0].weight
    net = up.build(module)
    up.cast(net, "bfloat16")
    assert module[0].weight is weight and weight.dtype == torch.bfloat16
    assert not module[2].bias.requires_grad
    assert up.params(net)["2.bias"].trainable is False
    assert net(X).dtype == torch.bfloat16


def test_load_refuses_a_cast_into_integers_that_is_not_exact(tmp_path):
    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = torch.nn.Parameter(torch.zeros(2, dtype=torch.int64),
                                            requires_grad=False)

    save_file({"steps": torch.tensor([1.5, 2.0])}, str(tmp_path / "f.safetensors"))
    net = up.build(Counter())
    with pytest.raises(up.CheckpointMismatchError, match="exactly"):
        up.load(net, tmp_path / "f.safetensors")
    assert net.native.steps.tolist() == [0, 0]
    save_file({"steps": torch.tensor([1.0, 2.0])}, str(tmp_path / "g.safetensors"))
    assert up.load(net, tmp_path / "g.safetensors").cast == (("steps", "float32", "int64"),)
    assert net.native.steps.tolist() == [1, 2]


# ---- a bfloat16 Hugging Face model --------------------------------------------------------------
def _llama_bf16():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=8, intermediate_size=16,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)


def test_bf16_hugging_face_model_lists_initializes_saves_loads_and_computes(tmp_path):
    model = _llama_bf16()
    net = up.build(model)
    assert {p.dtype for p in up.params(net).values()} == {"bfloat16"}
    up.initialize(net, init.Normal(std=0.02), seed=0, force_reinit=True)
    ids = np.array([[1, 2, 3, 4]])
    logits = net(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    up.save(net, tmp_path / "llama.safetensors")
    with safe_open(str(tmp_path / "llama.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    other = up.build(_llama_bf16())
    up.load(other, tmp_path / "llama.safetensors")
    assert torch.equal(other(ids).logits, logits)
    hf = tmp_path / "hf.safetensors"  # written by safetensors itself, from the module
    save_file({k: v for k, v in model.state_dict().items() if k != "lm_head.weight"
               or not model.config.tie_word_embeddings}, str(hf))
    third = up.build(_llama_bf16())
    assert up.load(third, hf, strict=False).cast == ()
    assert torch.equal(third(ids).logits, logits)


_SPEC_LOADER = """
import sys, json, numpy as np, unifparam as up
from unifparam import nn
spec = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(2))
net = up.build(spec, backend=sys.argv[1], dtype="bfloat16")
report = up.load(net, sys.argv[2])
x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
params = up.params(net).items()
print(json.dumps({"cast": list(report.cast),
                  "bits": {n: p.numpy().view(np.uint16).tolist() for n, p in params},
                  "dtypes": sorted({p.dtype for _, p in params}),
                  "out": np.asarray(up.to_numpy(net(x)), np.float32).tolist()}))
"""


@pytest.mark.parametrize("backend", ["flax:linen", "keras:jax"])
def test_a_bf16_safetensors_file_loads_into_a_bf16_spec_model(backend, tmp_path):
    module = _mlp(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    state = {k.replace("2.", "1."): v for k, v in module.state_dict().items()}  # no Tanh slot
    save_file(state, str(path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _SPEC_LOADER, backend, str(path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cast"] == [] and got["dtypes"] == ["bfloat16"]
    for name, tensor in state.items():
        assert got["bits"][name] == tensor.view(torch.int16).numpy().view(np.uint16).tolist()
    expected = module(torch.from_numpy(X).to(torch.bfloat16)).float().detach().numpy()
    np.testing.assert_allclose(np.array(got["out"]), expected, rtol=4e-2, atol=4e-2)


_ADOPTED = """
import sys, tempfile, os, json, numpy as np, unifparam as up
from unifparam import init
x = np.random.default_rng(0).random((3, 4), dtype=np.float32)

def model(kind, dtype):
    if kind == "keras":
        import keras
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh",
                                 dtype=dtype), keras.layers.Dense(2, dtype=dtype)])
    import jax, jax.numpy as jnp
    if kind == "nnx":
        from flax import nnx
        class M(nnx.Module):
            def __init__(self, rngs):
                self.a = nnx.Linear(4, 8, param_dtype=jnp.dtype(dtype), rngs=rngs)
                self.b = nnx.Linear(8, 2, param_dtype=jnp.dtype(dtype), rngs=rngs)
            def __call__(self, x):
                return self.b(jnp.tanh(self.a(x)))
        return M(nnx.Rngs(0))
    import flax.linen as fnn
    class L(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            h = jnp.tanh(fnn.Dense(8, param_dtype=jnp.dtype(dtype))(x))
            return fnn.Dense(2, param_dtype=jnp.dtype(dtype))(h)
    m = L()
    return m, m.init(jax.random.PRNGKey(0), x)

nets = {}
for dtype in ("float32", "bfloat16"):
    net = nets[dtype] = up.build(model(sys.argv[1], dtype))
    up.initialize(net, init.Normal(std=0.5), seed=0, force_reinit=True)
half, wide = up.params(nets["bfloat16"]), up.params(nets["float32"])
same = all((wide[n].numpy().astype(p.numpy().dtype).view(np.uint16) == p.numpy().view(np.uint16)
            ).all() for n, p in half.items())
first = next(iter(half.values()))
first[...] = np.full(first.shape, 0.3)
path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
up.save(nets["bfloat16"], path)
other = up.build(model(sys.argv[1], "bfloat16"))
report = up.load(other, path)
loaded = all((up.params(other)[n].numpy().view(np.uint16) == p.numpy().view(np.uint16)).all()
             for n, p in half.items())
out = np.asarray(up.to_numpy(nets["bfloat16"](x)), np.float32)
grads = up.gradients(nets["bfloat16"], x)
print(json.dumps({"dtypes": sorted({p.dtype for p in half.values()}), "same": bool(same),
                  "loaded": bool(loaded), "cast": list(report.cast),
                  "finite": bool(np.isfinite(out).all()), "grads": len(grads)}))
"""


@pytest.mark.parametrize("kind", ["keras", "nnx", "linen"])
def test_adopted_bf16_keras_and_flax_models_take_every_verb(kind):
    pytest.importorskip("keras" if kind == "keras" else "flax")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", _ADOPTED, kind], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"dtypes": ["bfloat16"], "same": True, "loaded": True, "cast": [],
                   "finite": True, "grads": 4}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e4m3fn"])
def test_chunkwise_rounding_equals_rounding_the_whole_float32_stream(dtype):
    target = init.Target("big.weight", (1100, 1000), "float32", fan_in=1000, fan_out=1100)
    for initializer in (init.Normal(std=0.5), init.XavierUniform(), init.Default()):
        chunked = initializer.generate(target, 3, dtype)  # more than one chunk, in threads
        assert chunked.dtype.name == dtype
        whole = initializer.generate(target, 3).astype(dtypes.numpy_dtype(dtype))
        np.testing.assert_array_equal(_bits(chunked), _bits(whole))
