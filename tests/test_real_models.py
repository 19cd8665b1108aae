"""Real third-party models adopted as they are (issue 11): transformers GPT-2, Llama and BERT,
a keras_hub backbone, Flax models written the way Flax's examples write them. Every model is
built from a tiny config with random weights: nothing is downloaded.

Keras runs on this process's backend (``KERAS_BACKEND``, tensorflow in ``nox -s tests``).
"""

import numpy as np
import pytest

import unifparam as up
from unifparam import init

IDS = np.arange(10, dtype=np.int64).reshape(2, 5) % 50


def _finite(x):
    return bool(np.isfinite(np.asarray(x)).all())


# ---- PyTorch: weight norm's 0-d parameter, lazy modules --------------------------------------
torch = pytest.importorskip("torch")


def _weight_normed():
    from torch.nn.utils import parametrizations
    return torch.nn.Sequential(parametrizations.weight_norm(torch.nn.Linear(3, 2), dim=None))


G = "0.parametrizations.weight.original0"  # weight_norm(dim=None)'s magnitude: shape ()


def test_zero_dim_parameter_initializes_sets_saves_and_loads(tmp_path):
    net = up.build(_weight_normed())
    assert up.params(net)[G].shape == ()
    up.initialize(net, seed=0)
    assert up.params(net)[G].numpy().shape == ()
    up.params(net)[G].set(np.float32(2.0))
    assert net.native[0].parametrizations.weight.original0.shape == ()
    assert float(net.native[0].parametrizations.weight.original0.detach()) == 2.0
    up.save(net, tmp_path / "wn.safetensors")
    other = up.build(_weight_normed())
    up.load(other, tmp_path / "wn.safetensors")
    assert other.native[0].parametrizations.weight.original0.shape == ()
    assert float(up.params(other)[G].numpy()) == 2.0


def test_failed_initialize_of_a_zero_dim_parameter_changes_nothing():
    net = up.build(_weight_normed())
    before = {n: p.numpy().copy() for n, p in up.params(net).items()}

    def wrong(name, shape, rng):  # gives the 0-d parameter a (1,) array
        return np.ones(shape if shape else (1,), np.float32)

    with pytest.raises(up.InitializerError, match="original0"):
        up.initialize(net, wrong, select="*", force_reinit=True)
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(p.numpy(), before[n])
        assert p.numpy().shape == before[n].shape


def test_adopted_lazy_module_prints_its_materialized_form():
    net = up.build(torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.ReLU()))
    assert "LazyLinear(in_features=0" in repr(net)
    net(np.ones((2, 4), np.float32))
    assert repr(net[0]) == "Linear(in_features=4, out_features=3, bias=True)"
    assert "(0): Linear(in_features=4, out_features=3, bias=True)" in repr(net)


def test_default_loss_needs_a_float_output():
    class Argmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return {"ids": self.lin(x).argmax(-1)}

    net = up.build(Argmax())
    with pytest.raises(up.OutputError, match="floating-point"):
        up.gradients(net, np.ones((2, 4), np.float32))
    with pytest.raises(TypeError):  # the matching builtin
        up.gradients(net, np.ones((2, 4), np.float32))


# ---- transformers ---------------------------------------------------------------------------
def _gpt2(device=None):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    if device is None:
        return transformers.GPT2LMHeadModel(cfg)
    with torch.device(device):
        return transformers.GPT2LMHeadModel(cfg)


def _llama(device=None):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=8, intermediate_size=16,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0)
    if device is None:
        return transformers.LlamaForCausalLM(cfg), cfg
    with torch.device(device):
        return transformers.LlamaForCausalLM(cfg), cfg


def test_gpt2_names_roles_and_the_lm_head_tie():
    model = _gpt2()
    net = up.build(model)
    names = dict(model.named_parameters())  # torch lists a tied parameter once
    assert list(up.params(net)) == list(names)
    roles = {n: p.role for n, p in up.params(net).items()}
    assert roles["transformer.wte.weight"] == "embedding"
    assert roles["transformer.h.0.ln_1.weight"] == "scale"
    assert roles["transformer.h.0.ln_1.bias"] == "shift"
    assert up.params(net)["transformer.wte.weight"].aliases == ("lm_head.weight",)


def test_gpt2_tie_is_kept_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    net = up.build(_gpt2())
    up.save(net, tmp_path / "gpt2.safetensors")
    torch.manual_seed(1)
    fresh = _gpt2()
    other = up.build(fresh)
    up.load(other, tmp_path / "gpt2.safetensors")
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    np.testing.assert_array_equal(fresh.lm_head.weight.detach().numpy(),
                                  net.native.transformer.wte.weight.detach().numpy())
    np.testing.assert_allclose(other.to_numpy(other(IDS).logits),
                               net.to_numpy(net(IDS).logits), rtol=1e-5, atol=1e-6)


def test_gpt2_built_on_meta_materializes_without_leftover_memory():
    model = _gpt2("meta")
    net = up.build(model)
    assert up.params(net)["transformer.h.0.attn.c_attn.weight"].state == "abstract"
    up.materialize(net)
    for name, p in up.params(net).items():
        assert _finite(p.numpy()), name
    # GPT-2's own default (its _init_weights, as when built eagerly), not whatever
    # torch.empty left in memory: Conv1D weights normal(0.02), biases zero
    w = up.params(net)["transformer.h.0.attn.c_attn.weight"].numpy()
    assert 0.01 < w.std() < 0.03
    np.testing.assert_array_equal(up.params(net)["transformer.h.0.attn.c_attn.bias"].numpy(), 0)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert _finite(net.to_numpy(net(IDS).logits))


def test_gpt2_default_loss_sums_the_float_leaves_of_its_model_output():
    torch.manual_seed(0)
    model = _gpt2()
    net = up.build(model)
    got = up.gradients(net, IDS)
    model.eval().zero_grad()  # gradients run in evaluation mode (no dropout)
    model(torch.from_numpy(IDS)).logits.sum().backward()  # the only float leaf: the cache isn't
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_llama_rmsnorm_is_a_scale_and_model_wide_init_keeps_it_one():
    model, _ = _llama()
    net = up.build(model)
    norm = up.params(net)["model.layers.0.input_layernorm.weight"]
    assert norm.role == "scale"
    up.initialize(net, init.Normal(std=0.02), seed=0, force_reinit=True)
    np.testing.assert_array_equal(norm.numpy(), 1.0)
    assert up.params(net)["model.layers.0.self_attn.q_proj.weight"].numpy().std() > 0


def test_llama_built_on_meta_materializes_then_runs():
    model, _ = _llama("meta")
    net = up.build(model)
    up.materialize(net)
    np.testing.assert_array_equal(up.params(net)["model.norm.weight"].numpy(), 1.0)
    for name, p in up.params(net).items():
        assert _finite(p.numpy()), name
    eager, _ = _llama()  # rotary inv_freq, computed by its constructor: recomputed, not listed
    np.testing.assert_array_equal(model.model.rotary_emb.inv_freq.numpy(),
                                  eager.model.rotary_emb.inv_freq.numpy())
    assert "model.rotary_emb.inv_freq" not in up.params(net)
    assert _finite(net.to_numpy(net(IDS).logits))


def test_bert_adopted_runs_differentiates_and_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=16,
                                  max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    net = up.build(model)
    assert list(up.params(net)) == [n for n, _ in model.named_parameters()]
    assert up.params(net)["embeddings.LayerNorm.weight"].role == "scale"
    got = up.gradients(net, IDS)  # default loss: last_hidden_state and pooler_output
    model.zero_grad()
    out = model(torch.from_numpy(IDS))
    (out.last_hidden_state.sum() + out.pooler_output.sum()).backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.grad.numpy(), rtol=1e-4, atol=1e-5)
    up.save(net, tmp_path / "bert.safetensors")
    torch.manual_seed(1)
    other = up.build(transformers.BertModel(cfg).eval())
    up.load(other, tmp_path / "bert.safetensors")
    np.testing.assert_allclose(other.to_numpy(other(IDS).last_hidden_state),
                               net.to_numpy(net(IDS).last_hidden_state), rtol=1e-5, atol=1e-6)


# ---- Flax linen, written the way Flax's examples write it -----------------------------------
def _linen():
    pytest.importorskip("flax")
    import flax.linen as fnn
    return fnn


def _cnn_class():
    fnn = _linen()

    class CNN(fnn.Module):
        """Flax's MNIST example, smaller, with BatchNorm (``train``) and Dropout."""

        @fnn.compact
        def __call__(self, x, train: bool):
            x = fnn.Conv(features=4, kernel_size=(3, 3))(x)
            x = fnn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = fnn.avg_pool(fnn.relu(x), window_shape=(2, 2), strides=(2, 2))
            x = x.reshape((x.shape[0], -1))
            x = fnn.Dropout(rate=0.5, deterministic=not train)(fnn.Dense(features=8)(x))
            return fnn.Dense(features=3)(x)

    return CNN


IMAGES = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)


def test_flax_module_taking_train_runs_in_both_modes():
    import jax
    model = _cnn_class()()
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = model.init(keys, IMAGES, train=False)
    net = up.build((model, variables))
    out = np.asarray(net(IMAGES))
    np.testing.assert_allclose(out, model.apply(variables, IMAGES, train=False), atol=1e-5)
    mean = up.params(net)["BatchNorm_0.running_mean"]
    before = mean.numpy().copy()
    net(IMAGES, training=True)  # batch statistics move, dropout draws
    assert not np.allclose(mean.numpy(), before)
    assert set(up.gradients(net, IMAGES)) == {n for n, p in up.params(net).items()
                                              if p.trainable}


@pytest.mark.parametrize("spelling", ["deterministic", "use_running_average", "train_default"])
def test_flax_mode_arguments_of_every_spelling(spelling):
    import jax
    fnn = _linen()

    class Deterministic(fnn.Module):
        @fnn.compact
        def __call__(self, x, deterministic: bool):
            return fnn.Dropout(0.5, deterministic=deterministic)(fnn.Dense(6)(x))

    class RunningAverage(fnn.Module):
        @fnn.compact
        def __call__(self, x, use_running_average: bool):
            return fnn.BatchNorm(use_running_average=use_running_average)(fnn.Dense(6)(x))

    class TrainDefault(fnn.Module):  # a default of True must not decide evaluation
        @fnn.compact
        def __call__(self, x, train: bool = True):
            return fnn.BatchNorm(use_running_average=not train)(fnn.Dense(6)(x))

    cls, evaluation = {"deterministic": (Deterministic, {"deterministic": True}),
                       "use_running_average": (RunningAverage, {"use_running_average": True}),
                       "train_default": (TrainDefault, {"train": False})}[spelling]
    x = np.random.default_rng(0).random((4, 3), dtype=np.float32)
    model = cls()
    variables = model.init(jax.random.PRNGKey(0), x, **evaluation)
    net = up.build((model, variables))
    out = np.asarray(net(x))
    np.testing.assert_allclose(out, model.apply(variables, x, **evaluation), atol=1e-5)
    assert np.asarray(net(x, training=True)).shape == (4, 6)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, **evaluation))
    assert _finite(up.materialize(up.build((model, abstract)), x)(x))  # init in evaluation


def test_flax_abstract_variables_from_eval_shape_then_materialize():
    import jax
    fnn = _linen()

    class Scaled(fnn.Module):  # a parameter of its own: only module.init knows its initializer
        @fnn.compact
        def __call__(self, x, train: bool = False):
            gain = self.param("gain", fnn.initializers.ones, (8,))
            return fnn.Dense(8)(x) * gain

    for model, x in ((_cnn_class()(), IMAGES), (Scaled(), np.ones((2, 4), np.float32))):
        abstract = jax.eval_shape(lambda m=model, x=x: m.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False))
        net = up.build((model, abstract))
        assert {p.state for p in up.params(net).values()} == {"abstract"}
        up.materialize(net)  # no input, no initializer: flax's defaults, else the portable one
        assert {p.state for p in up.params(net).values()} == {"materialized"}
        assert _finite(net(x))


def test_flax_dense_general_kernels_are_not_conv_kernels():
    import jax
    fnn = _linen()

    class Block(fnn.Module):
        @fnn.compact
        def __call__(self, x, deterministic: bool = True):
            h = fnn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(
                fnn.LayerNorm()(x), deterministic=deterministic)
            x = x + h
            return x + fnn.DenseGeneral(features=(2, 4))(fnn.LayerNorm()(x)).reshape(x.shape)

    x = np.random.default_rng(0).random((2, 5, 8), dtype=np.float32)
    model = Block()
    variables = model.init(jax.random.PRNGKey(0), x)
    net = up.build((model, variables))
    for name in ("DenseGeneral_0.weight", "MultiHeadDotProductAttention_0.query.weight"):
        p = up.params(net)[name]
        assert p.role == "weight" and p.axes is None, name  # no conv layout read into it
        assert p.shape == (8, 2, 4), name                     # flax's own order kept
    assert up.params(net)["LayerNorm_0.weight"].role == "scale"
    np.testing.assert_allclose(np.asarray(net(x)), model.apply(variables, x), atol=1e-5)


def test_flax_default_loss_on_a_dict_output():
    import jax
    import jax.numpy as jnp
    fnn = _linen()

    class Heads(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            logits = fnn.Dense(3)(x)
            return {"logits": logits, "ids": jnp.argmax(logits, -1)}

    x = np.ones((2, 4), np.float32)
    model = Heads()
    variables = model.init(jax.random.PRNGKey(0), x)
    net = up.build((model, variables))
    got = up.gradients(net, x)
    want = jax.grad(lambda v: model.apply(v, x)["logits"].sum())(variables)["params"]
    np.testing.assert_allclose(got["Dense_0.weight"], np.asarray(want["Dense_0"]["kernel"]).T,
                               rtol=1e-5)


# ---- Keras and keras_hub ----------------------------------------------------------------------
def _keras():
    return pytest.importorskip("keras")


def _keras_hub():
    _keras()
    try:
        import keras_hub
    except ImportError:
        pytest.skip("keras-hub is not installed: its declared tensorflow-text dependency pulls "
                    "the full tensorflow wheel over tensorflow-cpu, so it is installed with "
                    "--no-deps (pip install --no-deps keras-hub==0.32.0 kagglehub==1.0.2 "
                    "kagglesdk==0.1.28)")
    return keras_hub


def test_keras_model_with_eager_only_control_flow_is_adopted_and_called():
    keras = _keras()
    from keras import ops

    class Gate(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(3)
            self.b = keras.layers.Dense(2)

        def call(self, x):
            h = self.a(x)
            if float(ops.convert_to_numpy(ops.max(h))) > 100.0:  # a Python if on a value
                h = h / 100.0
            return self.b(h)

    x = np.ones((2, 4), np.float32)
    assert tuple(Gate()(x).shape) == (2, 2)  # plain Keras, called on data
    net = up.build(Gate())
    assert tuple(net(x).shape) == (2, 2)
    assert up.params(net)["b.weight"].shape == (2, 3)
    net = up.build(Gate())
    up.materialize(net, input_shape=(2, 4), abstract=True)
    assert {p.state for p in up.params(net).values()} == {"abstract"}
    up.initialize(net, init.Constant(0.5), seed=0)
    up.materialize(net)
    np.testing.assert_allclose(net.to_numpy(net(x)), 0.5 * (0.5 * 4) * 3)  # biases 0


def _gpt2_backbone(keras_hub):
    return keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=8, intermediate_dim=16,
                                         max_sequence_length=16)


TOKENS = {"token_ids": IDS.astype(np.int32), "padding_mask": np.ones((2, 5), np.int32)}


def test_keras_hub_backbone_names_follow_the_one_keras_rule():
    keras_hub = _keras_hub()
    net = up.build(_gpt2_backbone(keras_hub))
    names = list(up.params(net))
    # positions in the functional backbone, then attribute names, then canonical locals
    assert names[:4] == ["0.weight", "1.weight", "4.self_attention.query.weight",
                         "4.self_attention.query.bias"]
    assert "4.self_attention_layer_norm.weight" in names
    assert not [n for n in names if n.rsplit(".", 1)[1] in ("kernel", "embeddings", "gamma",
                                                            "beta")]
    roles = {n: p.role for n, p in up.params(net).items()}
    assert roles["0.weight"] == roles["1.weight"] == "embedding"
    assert roles["4.self_attention_layer_norm.weight"] == "scale"
    assert tuple(net(TOKENS).shape) == (2, 5, 8)


def test_keras_hub_dict_output_default_loss_and_round_trip(tmp_path):
    keras_hub = _keras_hub()
    keras = _keras()
    bert = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=8, intermediate_dim=16,
                                         max_sequence_length=16)
    inputs = {**TOKENS, "segment_ids": np.zeros((2, 5), np.int32)}
    net = up.build(bert)
    got = up.gradients(net, inputs)  # a dict: sequence_output and pooled_output
    want = up.gradients(net, inputs, loss=lambda out: keras.ops.sum(out["sequence_output"])
                        + keras.ops.sum(out["pooled_output"]))
    assert set(got) == set(want)
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    up.save(net, tmp_path / "bert.safetensors")
    other = up.build(keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2,
                                                   num_heads=2, hidden_dim=8,
                                                   intermediate_dim=16, max_sequence_length=16))
    up.load(other, tmp_path / "bert.safetensors")
    np.testing.assert_allclose(other.to_numpy(other(inputs)["pooled_output"]),
                               net.to_numpy(net(inputs)["pooled_output"]), rtol=1e-5, atol=1e-6)


def test_nnx_default_loss_on_a_dict_output():
    pytest.importorskip("flax.nnx")
    import jax.numpy as jnp
    from flax import nnx

    class Heads(nnx.Module):
        def __init__(self, *, rngs):
            self.lin = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x):
            logits = self.lin(x)
            return {"logits": logits, "ids": jnp.argmax(logits, -1)}

    model = Heads(rngs=nnx.Rngs(0))
    x = np.ones((2, 4), np.float32)
    got = up.gradients(up.build(model), x)
    want = nnx.grad(lambda m: m(x)["logits"].sum())(model)
    np.testing.assert_allclose(got["lin.weight"], np.asarray(want["lin"]["kernel"][...]).T,
                               rtol=1e-5)
