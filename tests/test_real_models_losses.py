"""Real models, second round (issue 23): nothing silently lost, no silently wrong output.

Every model is built from a tiny config with random weights: nothing is downloaded. Keras
runs on this process's backend (``KERAS_BACKEND``).
"""

import numpy as np
import pytest

import unifparam as up

IDS = np.arange(10, dtype=np.int64).reshape(2, 5) % 50


# ---- keras_hub: every variable a layer owns is listed ---------------------------------------
def _keras_hub():
    pytest.importorskip("keras")
    return pytest.importorskip("keras_hub")


def _llama_lm(keras_hub):
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=50, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, tie_word_embeddings=False)
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def test_keras_hub_llama_lists_reverse_embeddings_and_round_trips(tmp_path):
    keras_hub = _keras_hub()
    keras = pytest.importorskip("keras")
    inputs = {"token_ids": IDS.astype(np.int32), "padding_mask": np.ones((2, 5), np.int32)}
    net = up.build(_llama_lm(keras_hub))
    listed = {p.native_name for p in up.params(net).values()}
    assert listed == {v.path for v in net.native.weights}  # every variable Keras saves
    assert up.params(net)["0.0.reverse_embeddings"].shape == (8, 50)
    up.save(net, tmp_path / "llama.safetensors")
    keras.utils.set_random_seed(1)
    other = up.build(_llama_lm(keras_hub))
    up.load(other, tmp_path / "llama.safetensors")
    np.testing.assert_array_equal(other.to_numpy(other(inputs)), net.to_numpy(net(inputs)))


# ---- transformers built on meta: constructor-made buffers get the eager values --------------
torch = pytest.importorskip("torch")


def _hf(name):
    T = pytest.importorskip("transformers")  # noqa: N806
    k = dict(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=16, max_position_embeddings=16)
    return {
        "bert": lambda: (T.BertModel, T.BertConfig(**k)),
        "albert": lambda: (T.AlbertModel, T.AlbertConfig(embedding_size=8, **k)),
        "distilbert": lambda: (T.DistilBertModel, T.DistilBertConfig(
            vocab_size=50, dim=8, n_layers=2, n_heads=2, hidden_dim=16,
            max_position_embeddings=16)),
        "electra": lambda: (T.ElectraModel, T.ElectraConfig(embedding_size=8, **k)),
        "llama": lambda: (T.LlamaForCausalLM, T.LlamaConfig(
            num_key_value_heads=1, bos_token_id=0, eos_token_id=0, pad_token_id=0, **k)),
        "gpt2": lambda: (T.GPT2LMHeadModel, T.GPT2Config(
            vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2, bos_token_id=0,
            eos_token_id=0, pad_token_id=0)),
    }[name]()


def _native_out(model):
    with torch.no_grad():
        out = model(torch.from_numpy(IDS))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


@pytest.mark.parametrize("name", ["bert", "albert", "distilbert", "electra", "llama", "gpt2"])
def test_hf_model_built_on_meta_computes_what_the_eager_model_computes(name, tmp_path):
    cls, cfg = _hf(name)
    torch.manual_seed(0)
    eager = cls(cfg).eval()
    up.save(up.build(eager), tmp_path / "m.safetensors")
    with torch.device("meta"):
        meta = cls(cfg).eval()
    up.load(up.build(meta), tmp_path / "m.safetensors")  # materializes from the file
    assert not [n for n, b in meta.named_buffers() if b.is_meta]
    np.testing.assert_array_equal(_native_out(meta), _native_out(eager))  # torch's own call
    with torch.device("meta"):
        other = cls(cfg).eval()
    up.materialize(up.build(other))  # then values: the same buffers either way
    for (n, b), (_, want) in zip(other.named_buffers(), eager.named_buffers()):
        np.testing.assert_array_equal(b.numpy(), want.numpy(), err_msg=n)
    if hasattr(eager, "generate"):
        ids = torch.from_numpy(IDS[:1])
        kw = dict(max_new_tokens=4, do_sample=False)
        np.testing.assert_array_equal(meta.generate(ids, **kw).numpy(),
                                      eager.generate(ids, **kw).numpy())


class _Table(torch.nn.Module):
    """A lookup table its constructor computes, kept out of state_dict."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.register_buffer("table", torch.arange(3.0), persistent=False)

    def forward(self, x):
        return self.lin(x) + self.table


def test_materialize_fails_naming_a_buffer_nothing_recomputes():
    with torch.device("meta"):
        model = _Table()
    net = up.build(model)
    with pytest.raises(up.UnsupportedError, match="'table'"):
        up.materialize(net)
    assert {p.state for p in up.params(net).values()} == {"abstract"}  # nothing changed
    assert model.lin.weight.is_meta
    model.register_buffer("table", torch.arange(3.0), persistent=False)  # the fix it names
    up.materialize(net)
    assert np.isfinite(net.to_numpy(net(np.ones((2, 3), np.float32)))).all()


def test_hf_model_materialized_from_meta_gets_its_own_init_weights():
    # eagerly built, a Hugging Face model's values come from its _init_weights (post_init):
    # materialized from meta, the same rule, not torch's reset_parameters
    model = _marian()
    with torch.device("meta"):
        meta = type(model)(model.config).eval()
    up.materialize(up.build(meta))
    for table in ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"):
        np.testing.assert_array_equal(meta.get_parameter(table).detach().numpy(),
                                      model.get_parameter(table).detach().numpy())
    q = meta.model.encoder.layers[0].self_attn.q_proj
    assert abs(float(q.weight.std()) - model.config.init_std) < 0.01  # normal(init_std)
    np.testing.assert_array_equal(q.bias.detach().numpy(), 0.0)


# ---- keras_hub: canonical names do not depend on what the process built before -------------
def _mixtral(keras_hub):
    return keras_hub.models.MixtralBackbone(
        vocabulary_size=50, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, num_experts=2, top_k=1)


def test_keras_hub_mixtral_names_are_stable_across_instances(tmp_path):
    keras_hub = _keras_hub()
    inputs = {"token_ids": IDS.astype(np.int32), "padding_mask": np.ones((2, 5), np.int32)}
    first = up.build(_mixtral(keras_hub))
    up.save(first, tmp_path / "mixtral.safetensors")
    second = up.build(_mixtral(keras_hub))  # Keras numbers its auto-named layers _1, _2, ...
    assert list(up.params(second)) == list(up.params(first))
    assert "2.sparse_moe_block.sparse_feedforward_gate_dense.weight" in up.params(first)
    up.load(second, tmp_path / "mixtral.safetensors")
    np.testing.assert_array_equal(second.to_numpy(second(inputs)),
                                  first.to_numpy(first(inputs)))


# ---- model-wide re-initialization leaves constant tables alone -------------------------------
def _marian():
    T = pytest.importorskip("transformers")  # noqa: N806
    cfg = T.MarianConfig(vocab_size=50, d_model=8, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=16,
                         pad_token_id=0, decoder_start_token_id=0)
    return T.MarianMTModel(cfg).eval()


def test_marian_sinusoidal_tables_survive_model_wide_reinitialization():
    model = _marian()
    net = up.build(model)
    table = "model.encoder.embed_positions.weight"
    assert not up.params(net)[table].trainable
    frozen = {n: p.numpy().copy() for n, p in up.params(net).items() if not p.trainable}
    q = "model.encoder.layers.0.self_attn.q_proj.weight"
    before = up.params(net)[q].numpy().copy()
    ids = torch.from_numpy(IDS)
    up.initialize(net, seed=0, force_reinit=True)
    for n, want in frozen.items():
        np.testing.assert_array_equal(up.params(net)[n].numpy(), want, err_msg=n)
    assert not np.array_equal(up.params(net)[q].numpy(), before)
    with torch.no_grad():
        assert np.isfinite(model(ids, decoder_input_ids=ids).logits.numpy()).all()
    up.initialize(net, up.init.Zeros(), select=table, force_reinit=True)  # named: it changes
    np.testing.assert_array_equal(up.params(net)[table].numpy(), 0.0)


def test_keras_constant_variable_survives_model_wide_reinitialization():
    keras = pytest.importorskip("keras")

    class Sinusoid(keras.layers.Layer):  # a constant table, as keras_hub's position encodings
        def build(self, shape):
            self.table = self.add_weight(shape=(shape[-1],), trainable=False,
                                         initializer=keras.initializers.Constant(0.5))

        def call(self, x):
            return x + self.table

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), Sinusoid()])
    net = up.build(model)
    assert not up.params(net)["2.variable"].trainable
    up.params(net)["1.running_mean"].set(np.full(3, 5.0, np.float32))
    up.initialize(net, seed=0, force_reinit=True)
    np.testing.assert_array_equal(up.params(net)["2.variable"].numpy(), 0.5)
    np.testing.assert_array_equal(up.params(net)["1.running_mean"].numpy(), 0.0)  # statistics


# ---- gradients in training mode -------------------------------------------------------------
def test_rwkv_gradients_in_training_mode_equal_torchs():
    T = pytest.importorskip("transformers")  # noqa: N806
    cfg = T.RwkvConfig(vocab_size=50, context_length=16, hidden_size=8, num_hidden_layers=2,
                       attention_hidden_size=8, intermediate_size=16)
    torch.manual_seed(0)
    model = T.RwkvForCausalLM(cfg).eval()
    net = up.build(model)
    got = up.gradients(net, IDS, training=True)  # its eval forward breaks autograd
    assert not model.training  # the mode is restored
    model.train()
    model.zero_grad()
    model(torch.from_numpy(IDS)).logits.sum().backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- Flax NNX: a variable the forward changes -----------------------------------------------
def _counted():
    pytest.importorskip("flax.nnx")
    import jax.numpy as jnp
    from flax import nnx

    class Count(nnx.Variable):  # the NNX guide's own example
        pass

    class Counted(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 3, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.count = Count(jnp.array(0))

        def __call__(self, x):
            self.count[...] += 1
            return self.drop(self.lin(x))

    return nnx, Counted


def test_nnx_gradients_with_a_counter_mutated_in_call():
    nnx, counted = _counted()
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    model = counted(nnx.Rngs(0))
    net = up.build(model)
    got = up.gradients(net, x)
    assert int(model.count[...]) == 1  # kept, as nnx.grad keeps it
    reference = counted(nnx.Rngs(0))
    reference.eval()
    want = nnx.grad(lambda m: m(x).sum())(reference)
    np.testing.assert_allclose(got["lin.weight"], np.asarray(want["lin"]["kernel"][...]).T,
                               rtol=1e-5)
    train = up.gradients(net, x, training=True)  # dropout drops: some inputs get nothing
    assert int(model.count[...]) == 2
    assert not np.allclose(train["lin.weight"], got["lin.weight"])
