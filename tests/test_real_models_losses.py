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
