"""Tiny-config real models for the adoption sweep (tests/test_sweep.py), by family.

``CI`` entries run in the main test run; ``FULL`` adds more (``nox -s sweep`` or
``UNIFPARAM_SWEEP=full``). Every model is built from a tiny config with random weights:
nothing is downloaded. An entry is ``name -> (make, input kind)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

FULL = os.environ.get("UNIFPARAM_SWEEP") == "full"

BERTISH = dict(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=16, max_position_embeddings=16)
DECODER = dict(BERTISH, num_key_value_heads=1, bos_token_id=0, eos_token_id=0, pad_token_id=0)
VISION = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=8, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=16)


def _hf(cls: str, config: str, **kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers
        return getattr(transformers, cls)(getattr(transformers, config)(**kw))
    return make


HF_CI: dict[str, tuple[Callable[[], Any], str]] = {
    "bert": (_hf("BertModel", "BertConfig", **BERTISH), "ids"),
    "albert": (_hf("AlbertModel", "AlbertConfig", embedding_size=8, **BERTISH), "ids"),
    "distilbert": (_hf("DistilBertModel", "DistilBertConfig", vocab_size=50, dim=8, n_layers=2,
                       n_heads=2, hidden_dim=16, max_position_embeddings=16), "ids"),
    "electra": (_hf("ElectraModel", "ElectraConfig", embedding_size=8, **BERTISH), "ids"),
    "roberta": (_hf("RobertaModel", "RobertaConfig", pad_token_id=1,
                    **dict(BERTISH, max_position_embeddings=20)), "ids"),
    "gpt2": (_hf("GPT2LMHeadModel", "GPT2Config", vocab_size=50, n_positions=16, n_embd=8,
                 n_layer=2, n_head=2), "ids"),
    "llama": (_hf("LlamaForCausalLM", "LlamaConfig", **DECODER), "ids"),
    "mistral": (_hf("MistralForCausalLM", "MistralConfig", **DECODER), "ids"),
    "qwen2": (_hf("Qwen2ForCausalLM", "Qwen2Config", **DECODER), "ids"),
    "gemma": (_hf("GemmaForCausalLM", "GemmaConfig", head_dim=4, **DECODER), "ids"),
    "mobilebert": (_hf("MobileBertModel", "MobileBertConfig", embedding_size=8,
                       intra_bottleneck_size=8, **BERTISH), "ids"),
    "vit": (_hf("ViTModel", "ViTConfig", **VISION), "pixels"),
}
HF_MORE: dict[str, tuple[Callable[[], Any], str]] = {
    "deberta_v2": (_hf("DebertaV2Model", "DebertaV2Config", **BERTISH), "ids"),
    "opt": (_hf("OPTForCausalLM", "OPTConfig", vocab_size=50, hidden_size=8, num_hidden_layers=2,
                num_attention_heads=2, ffn_dim=16, max_position_embeddings=16,
                word_embed_proj_dim=8), "ids"),
    "phi": (_hf("PhiForCausalLM", "PhiConfig", **DECODER), "ids"),
    "gpt_neo": (_hf("GPTNeoForCausalLM", "GPTNeoConfig", vocab_size=50, hidden_size=8,
                    num_layers=2, num_heads=2, attention_types=[[["global"], 2]],
                    max_position_embeddings=16), "ids"),
    "swin": (_hf("SwinModel", "SwinConfig", image_size=32, patch_size=4, embed_dim=8,
                 depths=[1, 1], num_heads=[2, 2], window_size=2), "pixels"),
    "marian": (_hf("MarianMTModel", "MarianConfig", vocab_size=50, d_model=8,
                   encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                   decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                   max_position_embeddings=16, pad_token_id=0,
                   decoder_start_token_id=0), "seq2seq"),
    "rwkv": (_hf("RwkvForCausalLM", "RwkvConfig", vocab_size=50, context_length=16,
                 hidden_size=8, num_hidden_layers=2, attention_hidden_size=8,
                 intermediate_size=16), "ids"),
}
HF = {**HF_CI, **(HF_MORE if FULL else {})}


def _kh(cls: str, **kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        import keras_hub
        return getattr(keras_hub.models, cls)(**kw)
    return make


DEC = dict(vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1,
           hidden_dim=8, intermediate_dim=16)
ENC = dict(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
           max_sequence_length=16)
KERAS_HUB_CI: dict[str, tuple[Callable[[], Any], str]] = {
    "llama": (_kh("LlamaBackbone", tie_word_embeddings=False, **DEC), "tokens"),
    "mistral": (_kh("MistralBackbone", **DEC), "tokens"),
    "mixtral": (_kh("MixtralBackbone", num_experts=2, top_k=1, **DEC), "tokens"),
    "gpt2": (_kh("GPT2Backbone", vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                 intermediate_dim=16, max_sequence_length=16), "tokens"),
    "bert": (_kh("BertBackbone", **ENC), "segments"),
    "distil_bert": (_kh("DistilBertBackbone", **ENC), "tokens"),
    "qwen": (_kh("QwenBackbone", tie_word_embeddings=False, **DEC), "tokens"),
    "phi3": (_kh("Phi3Backbone", **DEC), "tokens"),
    "gemma": (_kh("GemmaBackbone", vocabulary_size=50, num_layers=1, num_query_heads=2,
                  num_key_value_heads=1, hidden_dim=8, intermediate_dim=16, head_dim=4),
              "tokens"),
    "roberta": (_kh("RobertaBackbone", **ENC), "tokens"),
    "electra": (_kh("ElectraBackbone", vocab_size=50, num_layers=1, num_heads=2,
                    hidden_dim=8, embedding_dim=8, intermediate_dim=16,
                    max_sequence_length=16), "segments"),
    "opt": (_kh("OPTBackbone", **ENC), "tokens"),
}
KERAS_HUB = KERAS_HUB_CI  # a dozen in CI; the full sweep runs them on every Keras backend


def nnx_models() -> dict[str, tuple[Callable[[Any], Any], str]]:
    """Flax NNX models written the way the NNX guides write them: ``make(rngs)``."""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.linear1 = nnx.Linear(4, 8, rngs=rngs)
            self.linear2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.linear2(nnx.relu(self.linear1(x)))

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, kernel_size=(3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.linear = nnx.Linear(4 * 8 * 8, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn(self.conv(x)))
            return self.linear(self.dropout(x.reshape(x.shape[0], -1)))

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(50, 8, rngs=rngs)
            self.norm = nnx.LayerNorm(8, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False,
                                               rngs=rngs)
            self.out = nnx.Linear(8, 50, rngs=rngs)

        def __call__(self, ids):
            x = self.embed(ids)
            return self.out(x + self.attn(self.norm(x)))

    class Norms(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.ConvTranspose(3, 4, kernel_size=(2, 2), rngs=rngs)
            self.group = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
            self.rms = nnx.RMSNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.rms(self.group(self.conv(x)))

    class Recurrent(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(nnx.LSTMCell(4, 6, rngs=rngs))
            self.head = nnx.Linear(6, 2, rngs=rngs)

        def __call__(self, x):
            return self.head(self.rnn(x))

    class Stack(nnx.Module):  # a list of layers, as the guides' MLP with nnx.List
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(3)])

        def __call__(self, x):
            for layer in self.layers:
                x = nnx.gelu(layer(x))
            return x

    return {"mlp": (MLP, "vec"), "cnn": (CNN, "image"), "block": (Block, "ids"),
            "norms": (Norms, "image"), "recurrent": (Recurrent, "seq"), "stack": (Stack, "vec")}
