"""Bad input: each gets a typed error naming what is wrong, and leaves the model unchanged."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

from ._helpers import inputs, mlp


def _net(build):
    net = build(mlp())
    net(inputs(2, 4))
    return net


def test_unknown_parameter_name_suggests_close_names(build):
    net = _net(build)
    with pytest.raises(up.UnknownNameError, match=r"'0\.wieght'.*Did you mean '0\.weight'"):
        up.params(net)["0.wieght"]
    with pytest.raises(KeyError):
        up.params(net)["nope"]


def test_unknown_layer_name_or_index(build):
    net = _net(build)
    with pytest.raises(up.UnknownNameError, match="index 5 is out of range"):
        net[5]
    with pytest.raises(up.UnknownNameError, match="Children: 0, 1"):
        net["7"]
    with pytest.raises(AttributeError, match="weight"):
        net[0].wieght


@pytest.mark.parametrize("bad, match", [
    (lambda name, shape, rng: np.zeros((3, 3)), "shape"),
    (lambda name, shape, rng: np.zeros(shape, dtype=complex), "dtype"),
    (lambda name, shape, rng: np.full(shape, np.nan), "non-finite"),
])
def test_bad_initializer_output_is_rejected_before_any_write(build, bad, match):
    net = _net(build)
    before = {n: p.numpy() for n, p in up.params(net).items()}
    with pytest.raises(up.InitializerError, match=match):
        up.initialize(net, bad, force_reinit=True)
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(p.numpy(), before[n])
    assert net[0].weight.init is None  # nothing registered either


def test_writing_a_value_of_the_wrong_shape(build):
    net = _net(build)
    before = net[0].weight.numpy()
    with pytest.raises(up.ValueShapeError, match=r"'0\.weight'.*\(8, 4\)"):
        net[0].weight.set(np.zeros((4, 8)))
    with pytest.raises(up.ValueShapeError):
        net[0].weight[0] = np.zeros(5)
    np.testing.assert_array_equal(net[0].weight.numpy(), before)


def test_writing_a_deferred_parameter(build):
    net = build(mlp())
    with pytest.raises(up.DeferredParameterError, match="materialize"):
        net[0].weight[0, 0] = 1


def test_initializer_class_instead_of_instance(build):
    net = build(mlp())
    with pytest.raises(TypeError, match="instance"):
        up.initialize(net, init.Normal)


def test_select_matching_nothing(build):
    net = build(mlp())
    with pytest.raises(up.UnknownNameError, match="matches no parameter"):
        up.initialize(net, init.Zeros(), select="*.gamma")


class _Unheard(nn.Layer):
    """A spec layer kind no adapter registers a converter for."""

    kind = "Unheard"
    fields = ()


def test_a_spec_layer_the_adapter_cannot_build(build):
    with pytest.raises(up.UnsupportedError, match=r"cannot build a _Unheard layer.*Dense"):
        build(nn.Sequential(nn.Dense(4), _Unheard()))
