"""Writers x readers of checkpoint files and directories, with tiny configs and no downloads.

Writers: unifparam single file, unifparam sharded, ``safetensors.torch``,
``safetensors.numpy``, ``save_pretrained`` single and sharded. Readers: ``inspect_file``,
``load`` into an adopted model and into a spec model, ``safe_open``, ``from_pretrained``.
Every cell passes; a GPT-2 checkpoint into a spec model is the documented refusal in ``REFUSED``.
"""

import os
from pathlib import Path

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn
from unifparam.checkpoint import inspect_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from safetensors.torch import save_model  # noqa: E402

WRITERS = ["unifparam", "unifparam-sharded", "safetensors.torch", "safetensors.numpy",
           "save_pretrained", "save_pretrained-sharded"]
READERS = ["inspect_file", "load-adopted", "load-spec", "safe_open", "from_pretrained"]
#: The documented refusal: a spec model has unifparam's names, not GPT-2's, so a GPT-2
#: checkpoint loaded into one is a CheckpointMismatchError naming both sides (load with
#: ``rename=`` rules to map them); the spec-model column is the MLP below.
REFUSED = {"load-spec": up.CheckpointMismatchError}


def tiny_gpt2(seed: int):
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32,
                                  n_positions=8, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg).eval()


IDS = torch.tensor([[1, 2, 3, 4, 5]])


def logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(IDS).logits.numpy()


def write(kind: str, model, d: Path) -> Path:
    """Write ``model`` with one writer into directory ``d`` (with its config); the path to
    read (the directory, or the file)."""
    d.mkdir()
    model.config.save_pretrained(d)
    if kind == "unifparam":
        up.save(up.build(model), d / "model.safetensors")
    elif kind == "unifparam-sharded":
        up.save_sharded(up.build(model), d, max_shard_bytes=4096)
    elif kind == "safetensors.torch":
        save_model(model, str(d / "model.safetensors"), metadata={"format": "pt"})
    elif kind == "safetensors.numpy":
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()
                 if k != "lm_head.weight"}  # the tied copy, as save_pretrained drops it
        np_save_file(state, str(d / "model.safetensors"))
    elif kind == "save_pretrained":
        model.save_pretrained(d)
    else:
        model.save_pretrained(d, max_shard_size="4KB")
    return d


@pytest.fixture(scope="module")
def source():
    return tiny_gpt2(0)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("writer", WRITERS)
def test_gpt2_writer_by_reader(source, tmp_path, writer, reader):
    d = write(writer, source, tmp_path / "ckpt")
    sharded = writer.endswith("sharded")
    assert os.path.exists(d / "model.safetensors.index.json") == sharded
    if reader == "inspect_file":
        text = inspect_file(d)
        assert "transformer.h.0.attn.c_attn.weight" in text
        assert ("Verified: yes" in text) == writer.startswith("unifparam")
        assert ("Shards:" in text) == sharded
    elif reader == "load-adopted":
        dst = tiny_gpt2(1)
        report = up.load(up.build(dst), d)
        assert report.verified == writer.startswith("unifparam")
        np.testing.assert_array_equal(logits(dst), logits(source))
        assert dst.lm_head.weight.data_ptr() == dst.transformer.wte.weight.data_ptr()
    elif reader == "load-spec":
        net = up.build(nn.Sequential(nn.Embedding(32, 16), nn.Dense(32)), backend="torch")
        before = up.params(net)["0.weight"].numpy().copy()
        with pytest.raises(REFUSED[reader], match="Missing from the file: '0.weight'"):
            up.load(net, d)
        np.testing.assert_array_equal(up.params(net)["0.weight"].numpy(), before)
    elif reader == "safe_open":
        state = {k: v.numpy() for k, v in source.state_dict().items()}
        files = [p for p in d.iterdir() if p.suffix == ".safetensors"]
        seen = set()
        for path in files:
            with safe_open(str(path), framework="numpy") as f:
                for key in f.keys():
                    np.testing.assert_array_equal(f.get_tensor(key), state[key])
                    seen.add(key)
        assert {"transformer.wte.weight", "lm_head.weight"} & seen and len(seen) >= len(state) - 2
    else:
        back = transformers.GPT2LMHeadModel.from_pretrained(d).eval()
        np.testing.assert_array_equal(logits(back), logits(source))
        assert back.lm_head.weight.data_ptr() == back.transformer.wte.weight.data_ptr()


# ---- the spec-model column: an MLP whose torch names are unifparam's ----------------------
MLP_WRITERS = ["unifparam", "unifparam-sharded", "safetensors.torch", "safetensors.numpy"]


def mlp_source():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def write_mlp(kind: str, model, d: Path) -> Path:
    d.mkdir()
    if kind == "unifparam":
        up.save(up.build(model), d / "model.safetensors")
    elif kind == "unifparam-sharded":
        up.save_sharded(up.build(model), d, max_shard_bytes=64)
    elif kind == "safetensors.torch":
        save_model(model, str(d / "model.safetensors"))
    else:
        np_save_file({k: v.detach().numpy() for k, v in model.state_dict().items()},
                     str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("backend", ["torch", "keras:jax", "flax"])
@pytest.mark.parametrize("writer", MLP_WRITERS)
def test_mlp_writer_into_a_spec_model(tmp_path, writer, backend):
    if backend.startswith("keras") and os.environ.get("KERAS_BACKEND", "jax") != "jax":
        pytest.skip("keras:jax needs KERAS_BACKEND=jax")
    pytest.importorskip(backend.split(":")[0] if backend != "keras:jax" else "keras")
    src = mlp_source()
    d = write_mlp(writer, src, tmp_path / "ckpt")
    net = up.build(nn.Sequential(nn.Dense(8), nn.Activation("relu"), nn.Dense(3)),
                   backend=backend)
    up.initialize(net, init.Constant(0.0))
    report = up.load(net, d)  # shapes taken from the file
    assert report.verified == writer.startswith("unifparam")
    x = np.random.default_rng(0).random((2, 4)).astype(np.float32)
    with torch.no_grad():
        want = src(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(up.to_numpy(net(x)), want, rtol=1e-6, atol=1e-6)
