"""Neutral specs: declared parameters, shape tracing, printed structure, errors."""

import pytest

from unifparam import InputShapeError, SpecError, nn
from unifparam._trace import trace


def test_trace_conv_flatten_dense():
    spec = nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.Conv2D(6, 3, stride=2), nn.Flatten(),
                         nn.Dense(5))
    traced = trace(spec, (2, 3, 8, 8))
    assert traced["0"] == ((2, 3, 8, 8), {"weight": (4, 3, 3, 3), "bias": (4,)})
    assert traced["1"][1]["weight"] == (6, 4, 3, 3)
    assert traced["3"] == ((2, 6 * 3 * 3), {"weight": (5, 54), "bias": (5,)})


def test_trace_norms_and_embedding():
    spec = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(), nn.Flatten(), nn.BatchNorm())
    traced = trace(spec, (2, 3))
    assert traced["1"][1] == {"weight": (4,), "bias": (4,)}
    assert traced["3"][0] == (2, 12)
    assert set(traced["3"][1]) == {"weight", "bias", "running_mean", "running_var"}


def test_declared_shapes_leave_unknown_sizes_out():
    assert [d.shape for d in nn.Dense(3).param_decls()] == [(3, None), (3,)]
    assert nn.Conv2D(8, (3, 5)).param_decls()[0].shape == (8, None, 3, 5)
    bn = nn.BatchNorm().param_decls()
    assert [d.trainable for d in bn] == [True, True, False, False]


def test_given_sizes_are_checked():
    with pytest.raises(InputShapeError, match="in_channels=3.*5 channels"):
        trace(nn.Sequential(nn.Conv2D(4, 3, in_channels=3)), (1, 5, 8, 8))
    with pytest.raises(InputShapeError, match="smaller than the kernel"):
        trace(nn.Sequential(nn.Conv2D(4, 5)), (1, 1, 3, 3))


def test_printed_structure():
    spec = nn.Sequential(nn.Dense(8, activation="relu"), nn.Sequential(nn.Dense(2)))
    assert repr(spec) == ("Sequential(\n  (0): Dense(? -> 8, relu)\n  (1): Sequential(\n"
                          "    (0): Dense(? -> 2)\n  )\n)")


def test_spec_errors():
    with pytest.raises(SpecError, match="padding='same' needs stride=1"):
        nn.Conv2D(4, 3, stride=2, padding="same")
    with pytest.raises(SpecError, match="rate"):
        nn.Dropout(1.5)
    with pytest.raises(SpecError, match="takes unifparam.nn layers"):
        nn.Sequential(object())


@pytest.mark.parametrize("spec, x", [(nn.Dense(3), (2, 5)), (nn.Conv2D(4, 3), (2, 5, 8, 8)),
                                     (nn.BatchNorm(), (2, 5, 4, 4)), (nn.LayerNorm(), (2, 7, 5))])
def test_the_declared_input_size_is_the_one_infer_reads(spec, x):
    """Adapters read ``given_input_size()`` and ``size_axis`` instead of each layer's field."""
    assert spec.given_input_size() is None
    given = type(spec)(**{**{f: getattr(spec, f) for f in spec.fields},
                          spec.size_field: x[spec.size_axis]})
    assert given.given_input_size() == 5
    assert given.infer(x) == spec.infer(x)  # the size given is the size infer finds there
    with pytest.raises(InputShapeError):
        given.infer(tuple(n + 1 if i == spec.size_axis % len(x) else n
                          for i, n in enumerate(x)))
