"""Seeded blocks: any block of a parameter, made alone, equals the whole one's bit for bit."""

import numpy as np
import pytest

from unifparam import init
from unifparam.errors import InitializerError

INITS = {
    "uniform": init.Uniform(-0.3, 0.2),
    "normal": init.Normal(std=0.5, mean=0.1),
    "truncated": init.TruncatedNormal(std=0.02),
    "xavier_uniform": init.XavierUniform(),
    "xavier_normal": init.XavierNormal(),
    "kaiming_uniform": init.KaimingUniform(),
    "kaiming_normal": init.KaimingNormal(mode="fan_out"),
    "constant": init.Constant(0.25),
    "default": init.Default(),
    "orthogonal": init.Orthogonal(),
}

BLOCKS = [
    (slice(0, 7), slice(None)),          # rows
    (slice(None), slice(3, 8)),          # columns
    (slice(4, 9), slice(1, 10)),         # a block
    (slice(0, 1), slice(10, 11)),        # one element (odd positions: float32 half-words)
    (slice(None), slice(None)),          # everything
]


def _target(shape, dtype="float32", role="weight", name="blocks.0.attn.q.weight"):
    fan_in, fan_out = init.fans(shape, None)
    return init.Target(name, shape, dtype, role, None, fan_in, fan_out)


@pytest.mark.parametrize("name", sorted(INITS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocks_bit_identical(name, dtype):
    dist, tgt = INITS[name], _target((13, 11), dtype)
    whole = dist.generate(tgt, 7)
    for block in BLOCKS:
        got = dist.generate_block(tgt, 7, block)
        assert got.dtype == whole.dtype
        np.testing.assert_array_equal(got, whole[block], err_msg=f"{name} {block}")


def test_default_embedding_and_rank_3():
    tgt = _target((6, 5, 4), role="embedding")
    whole = init.Default().generate(tgt, 1)
    block = (slice(1, 4), slice(None), slice(2, 3))
    np.testing.assert_array_equal(init.Default().generate_block(tgt, 1, block), whole[block])
    bias = _target((9,), role="bias")
    np.testing.assert_array_equal(init.Default().generate_block(bias, 1, ((3, 9),)),
                                  init.Default().generate(bias, 1)[3:9])


@pytest.mark.parametrize("name", ["uniform", "normal", "truncated"])
def test_blocks_across_chunks(name, monkeypatch):
    # small chunks so a block spans several, with odd chunk sizes (Box-Muller pairing)
    monkeypatch.setattr(init, "CHUNK", 37)
    monkeypatch.setattr(init, "_PIECE", 5)  # and blocks made a few elements at a time
    dist, tgt = INITS[name], _target((20, 19))
    whole = dist.generate(tgt, 3)
    for block in [(slice(None), slice(5, 15)), (slice(3, 17), slice(0, 19)),
                  (slice(2, 3), slice(18, 19))]:
        np.testing.assert_array_equal(dist.generate_block(tgt, 3, block), whole[block])


def test_column_block_does_not_draw_whole_chunks(monkeypatch):
    calls = []
    real = init.Normal._draw
    monkeypatch.setattr(init.Normal, "_draw", lambda *a: calls.append(1) or real(*a))
    init.Normal(std=1.0).generate_block(_target((64, 64)), 0, (slice(None), slice(0, 16)))
    assert calls == []


def test_bad_block_is_typed():
    with pytest.raises(InitializerError, match="dimensions"):
        init.Uniform(-1, 1).generate_block(_target((4, 4)), 0, (slice(0, 2),))
    with pytest.raises(InitializerError, match="step-1"):
        init.Uniform(-1, 1).generate_block(_target((4, 4)), 0, (slice(0, 4, 2), slice(None)))
