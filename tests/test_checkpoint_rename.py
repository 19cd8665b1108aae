"""load(rename=...): a checkpoint loaded into another implementation of the architecture.

The real pair: transformers' GPT-2 (torch) into keras_hub's GPT2Backbone (keras:jax), equal
hidden states; plus the refusals, each before any change."""

import os

import numpy as np
import pytest

import unifparam as up
from unifparam import nn
from unifparam.checkpoint import Rule

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

H = r"h\.(\d+)\."


def block(rest: str):
    """GPT-2's block i is layer 4 + i of GPT2Backbone; ``rest`` may use the second group."""
    return lambda m: f"{4 + int(m[1])}." + rest.format(*m.groups()[1:])


#: transformers GPT-2 -> keras_hub GPT2Backbone: every rule keras_hub's converter writes.
GPT2_TO_KERAS_HUB = [
    Rule(r"wte\.weight", "0.weight"),
    Rule(r"wpe\.weight", "1.weight"),
    *(Rule(H + r"attn\.c_attn\.(weight|bias)", block(f"self_attention.{qkv}.{{}}"),
           part=(i, 3), reshape=True) for i, qkv in enumerate(["query", "key", "value"])),
    Rule(H + r"attn\.c_proj\.(weight|bias)", block("self_attention.attention_output.{}"),
         reshape=True),
    Rule(H + r"ln_1\.(weight|bias)", block("self_attention_layer_norm.{}")),
    Rule(H + r"ln_2\.(weight|bias)", block("feedforward_layer_norm.{}")),
    Rule(H + r"mlp\.c_fc\.weight", block("feedforward_intermediate_dense.weight"),
         transpose=True),
    Rule(H + r"mlp\.c_fc\.bias", block("feedforward_intermediate_dense.bias")),
    Rule(H + r"mlp\.c_proj\.weight", block("feedforward_output_dense.weight"), transpose=True),
    Rule(H + r"mlp\.c_proj\.bias", block("feedforward_output_dense.bias")),
    Rule(r"ln_f\.(weight|bias)", r"6.\1"),
]


def test_gpt2_torch_into_keras_hub_gpt2_backbone(tmp_path):
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        pytest.skip("the keras_hub side runs on keras:jax")
    keras_hub = pytest.importorskip("keras_hub")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2Model(cfg).eval()
    hf.save_pretrained(tmp_path, max_shard_size="8KB")  # sharded: the directory path works
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=32, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=64,
                                             max_sequence_length=8, dropout=0.0)
    net = up.build(backbone)
    report = up.load(net, tmp_path, rename=GPT2_TO_KERAS_HUB)
    assert not report.missing and not report.unexpected and not report.verified
    assert ("h.1.attn.c_attn.weight", "5.self_attention.value.weight") in report.renamed
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).last_hidden_state.numpy()
    got = np.asarray(backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def mlp(seed):
    net = up.build(nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(3)), backend="torch")
    up.initialize(net, up.init.Normal(std=1.0), seed=seed)
    up.materialize(net, input_shape=(2, 4))
    return net


def values(net):
    return {n: p.numpy().copy() for n, p in up.params(net).items()}


@pytest.fixture
def foreign(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"enc.fc1.w": rng.random((4, 8), np.float32), "enc.fc1.b": rng.random(8, np.float32),
              "enc.fc2.w": rng.random((8, 3), np.float32), "enc.fc2.b": rng.random(3, np.float32)}
    path = tmp_path / "other.safetensors"
    safetensors_numpy.save_file(arrays, str(path))
    return path, arrays


def test_rules_and_a_function_rename_and_transpose(foreign):
    path, arrays = foreign
    rules = [Rule(r"enc\.fc(\d)\.w", lambda m: f"{int(m[1]) - 1}.weight", transpose=True),
             Rule(r"enc\.fc(\d)\.b", lambda m: f"{int(m[1]) - 1}.bias")]
    net = mlp(1)
    report = up.load(net, path, rename=rules)
    assert dict(report.renamed)["enc.fc1.w"] == "0.weight"
    np.testing.assert_array_equal(values(net)["0.weight"], arrays["enc.fc1.w"].T)
    net2 = mlp(2)
    names = {"enc.fc1.b": "0.bias", "enc.fc2.b": "1.bias"}
    report = up.load(net2, path, rename=names.get, strict=False)  # None: skipped
    assert set(report.loaded) == {"0.bias", "1.bias"} and len(report.renamed) == 2
    np.testing.assert_array_equal(values(net2)["1.bias"], arrays["enc.fc2.b"])


@pytest.mark.parametrize("rules,error,match", [
    ([Rule(r"enc\.fc\d\.w", "0.weight")], up.CheckpointMismatchError, "map both"),
    ([Rule(r"enc\.fc1\.w", "../x")], up.CheckpointMismatchError, "not a parameter name"),
    ([Rule(r"enc\.fc1\.w", "0.weight", part=(0, 3))], up.CheckpointMismatchError,
     "equal parts"),
    ([Rule(r"enc\.fc1\.w", "1.weight", reshape=True)], up.CheckpointMismatchError,
     "holds 32 values"),
    ([Rule(r"enc\.fc1\.w", "0.weight", part=(3, 3))], up.SpecError, "0 <= i < n"),
    ([Rule(r"(", "0.weight")], up.SpecError, "not a regular expression"),
    (["0.weight"], up.SpecError, "Rule objects"),
    ([Rule(r"enc\.fc1\.w", "0.weight")], up.CheckpointMismatchError, "shape"),
])
def test_bad_rules_are_typed_and_change_nothing(foreign, rules, error, match):
    path, _ = foreign
    net = mlp(3)
    before = values(net)
    with pytest.raises(error, match=match):
        up.load(net, path, rename=rules, strict=False)
    assert all(np.array_equal(v, before[k]) for k, v in values(net).items())
