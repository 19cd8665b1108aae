"""The adoption sweep (issue 23): real models of every adoption family, tiny configs. For
each: the listing is complete (every variable the framework saves; every buffer the model
needs has values), meta/abstract then materialize (from a file) computes what the eagerly
built model computes, and save/load round trips exactly. A dozen architectures per family
here; ``nox -s sweep`` (``UNIFPARAM_SWEEP=full``) runs more. Gluon's model_zoo is in
tests/test_real_models_mxnet.py (its own venv)."""

import numpy as np
import pytest
import sweep_models as zoo

import unifparam as up

IDS = np.arange(10, dtype=np.int64).reshape(2, 5) % 50
RNG = np.random.default_rng(0)
INPUTS = {"ids": IDS, "pixels": RNG.random((1, 3, 32, 32), dtype=np.float32),
          "vec": RNG.random((2, 4), dtype=np.float32),
          "image": RNG.random((2, 8, 8, 3), dtype=np.float32),
          "seq": RNG.random((2, 5, 4), dtype=np.float32),
          "tokens": {"token_ids": IDS.astype(np.int32),
                     "padding_mask": np.ones((2, 5), np.int32)},
          "segments": {"token_ids": IDS.astype(np.int32),
                       "padding_mask": np.ones((2, 5), np.int32),
                       "segment_ids": np.zeros((2, 5), np.int32)}}


# ---- Hugging Face on torch --------------------------------------------------------------------
def _torch_out(model, kind):
    import torch
    with torch.no_grad():
        if kind == "seq2seq":
            out = model(torch.from_numpy(IDS), decoder_input_ids=torch.from_numpy(IDS))
        else:
            out = model(torch.from_numpy(INPUTS[kind]))
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key).numpy()
    return out[0].numpy()


@pytest.mark.parametrize("name", list(zoo.HF))
def test_hf(name, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    make, kind = zoo.HF[name]
    torch.manual_seed(0)
    eager = make().eval()
    net = up.build(eager)
    listed = {n for p in up.params(net).values() for n in (p.name, *p.aliases)}
    unlisted = [k for k, v in eager.state_dict().items() if v.is_floating_point()
                and k not in listed]
    assert not unlisted, f"saved by torch, not listed: {unlisted}"
    want = _torch_out(eager, kind)
    up.save(net, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    other = make().eval()
    up.load(up.build(other), tmp_path / "m.safetensors")
    np.testing.assert_array_equal(_torch_out(other, kind), want)
    with torch.device("meta"):
        meta = make().eval()
    up.load(up.build(meta), tmp_path / "m.safetensors")  # materialized from the file
    assert not [n for n, b in meta.named_buffers() if b.is_meta]
    np.testing.assert_array_equal(_torch_out(meta, kind), want)


# ---- keras_hub ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(zoo.KERAS_HUB))
def test_keras_hub(name, tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("keras_hub")
    make, kind = zoo.KERAS_HUB[name]
    model = make()
    net = up.build(model)
    listed = {p.native_name for p in up.params(net).values()}
    assert listed == {v.path for v in model.weights}  # every variable Keras saves
    want = _first(net, net(INPUTS[kind]))
    up.save(net, tmp_path / "m.safetensors")
    other = up.build(make())  # a second instance: auto-numbered layer names differ
    assert list(up.params(other)) == list(up.params(net))
    up.load(other, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(_first(other, other(INPUTS[kind])), want)


def _first(net, out):
    """A dict output's first entry (BERT's sequence_output), as numpy."""
    return net.to_numpy(next(iter(out.values())) if isinstance(out, dict) else out)


# ---- Flax NNX -------------------------------------------------------------------------------
NNX = ["mlp", "cnn", "block", "norms", "recurrent", "stack"]


@pytest.mark.parametrize("name", NNX)
def test_nnx(name, tmp_path):
    pytest.importorskip("flax.nnx")
    from flax import nnx
    cls, kind = zoo.nnx_models()[name]
    x = INPUTS[kind]
    model = cls(nnx.Rngs(0))
    model.eval()
    net = up.build(model)
    saved = {id(v) for _, v in nnx.iter_graph(model)
             if isinstance(v, (nnx.Param, nnx.BatchStat))}
    assert len(up.params(net)) == len(saved)  # every parameter and batch statistic
    want = np.asarray(model(x))
    up.save(net, tmp_path / "m.safetensors")
    other = cls(nnx.Rngs(1))
    other.eval()
    up.load(up.build(other), tmp_path / "m.safetensors")
    np.testing.assert_array_equal(np.asarray(other(x)), want)
    abstract = nnx.eval_shape(lambda: cls(nnx.Rngs(2)))
    anet = up.build(abstract)
    assert {p.state for p in up.params(anet).values()} == {"abstract"}
    up.load(anet, tmp_path / "m.safetensors")  # materialized from the file
    np.testing.assert_array_equal(np.asarray(anet(x)), want)
