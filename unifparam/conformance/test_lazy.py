"""Lazy (deferred) initialization: L1-L12."""

import numpy as np
import pytest

import unifparam as up
from unifparam import nn

from ._helpers import Recorder, inputs, lazy_mlp


def test_L1_parameters_exist_with_unknown_input_sizes(build):
    net = build(lazy_mlp())
    listed = [(n, p.shape, p.state) for n, p in up.params(net).items()]
    assert listed == [("0.weight", (256, None), "deferred"), ("0.bias", (256,), "deferred"),
                      ("1.weight", (10, None), "deferred"), ("1.bias", (10,), "deferred")]
    with pytest.raises(up.DeferredParameterError, match=r"'0\.weight'.*materialize"):
        net[0].weight.numpy()


def test_L2_initialize_only_registers(build, capsys):
    net = build(lazy_mlp())
    up.initialize(net, Recorder())
    assert capsys.readouterr().out == ""
    assert net[0].weight.state == "deferred"


def test_L3_first_forward_materializes_layer_by_layer(build, capsys):
    net = build(lazy_mlp())
    up.initialize(net, Recorder())
    net(inputs(2, 20))
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (256, 20)",
                                                    "Init 1.weight (10, 256)"]
    assert [p.shape for p in up.params(net).values()] == [(256, 20), (256,), (10, 256), (10,)]


def test_L4_second_forward_does_not_initialize_again(build, capsys):
    net = build(lazy_mlp())
    up.initialize(net, Recorder())
    x = inputs(2, 20)
    y1 = net.to_numpy(net(x))
    capsys.readouterr()
    y2 = net.to_numpy(net(x))
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(y1, y2)


def test_L5_forced_reinit_of_materialized_net_is_immediate(build, capsys):
    net = build(lazy_mlp())
    net(inputs(2, 20))
    up.initialize(net, Recorder(), force_reinit=True)
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (256, 20)",
                                                    "Init 1.weight (10, 256)"]


def test_L6_known_input_sizes_initialize_at_once(build, capsys):
    net = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20),
                              nn.Dense(10, in_features=256)))
    up.initialize(net, Recorder())
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (256, 20)",
                                                    "Init 1.weight (10, 256)"]
    assert all(p.state == "materialized" for p in up.params(net).values())


@pytest.mark.requires("abstract")
def test_L7_shapes_without_values_by_abstract_materialization(build):
    net = build(lazy_mlp())
    up.materialize(net, input_shape=(2, 20), abstract=True)
    assert [(p.shape, p.state) for p in up.params(net).values()] == [
        ((256, 20), "abstract"), ((256,), "abstract"), ((10, 256), "abstract"),
        ((10,), "abstract")]
    with pytest.raises(up.DeferredParameterError, match="no memory"):
        net[0].weight.numpy()
    up.materialize(net)
    assert net[0].weight.numpy().shape == (256, 20)
    assert net.to_numpy(net(inputs(3, 20))).shape == (3, 10)


def test_L8_layers_exist_before_the_first_call(build):
    net = build(lazy_mlp())
    assert len(net) == 2
    assert [len(up.params(layer)) for layer in net] == [2, 2]  # Keras would list none


def test_L9_new_batch_size_works_new_feature_size_fails_clearly(build):
    net = build(lazy_mlp())
    net(inputs(2, 20))
    assert net.to_numpy(net(inputs(5, 20))).shape == (5, 10)
    before = {n: p.numpy() for n, p in up.params(net).items()}
    with pytest.raises(up.InputShapeError) as err:
        net(inputs(2, 30))
    msg = str(err.value)
    assert "'0'" in msg and "20" in msg and "30" in msg
    for n, p in up.params(net).items():
        np.testing.assert_array_equal(p.numpy(), before[n])


def test_L10_partial_sizes_initialize_what_they_can(build, capsys):
    net = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20), nn.Dense(10)))
    up.initialize(net, Recorder())
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (256, 20)"]
    assert net[1].weight.state == "deferred"
    net(inputs(2, 20))
    assert capsys.readouterr().out.splitlines() == ["Init 1.weight (10, 256)"]


def test_L11_mismatched_given_size_fails_and_leaves_model_unchanged(build, capsys):
    net = build(nn.Sequential(nn.Dense(256, activation="relu", in_features=20), nn.Dense(10)))
    up.initialize(net, Recorder())
    before = net[0].weight.numpy()
    capsys.readouterr()
    with pytest.raises(up.InputShapeError) as err:
        net(inputs(2, 30))
    assert "'0'" in str(err.value) and "20" in str(err.value) and "30" in str(err.value)
    assert capsys.readouterr().out == ""
    assert net[1].weight.state == "deferred"
    np.testing.assert_array_equal(net[0].weight.numpy(), before)


def test_L12_inputs_of_different_sizes_need_consistent_tied_parameters(build):
    shared = nn.Dense(4)
    net = build(nn.Sequential(shared, shared))  # one layer applied twice: 4 -> 4 -> 4
    with pytest.raises(up.InputShapeError, match="'1'"):
        net(inputs(2, 3))  # first use sees 3 features, second 4: one weight cannot be both
    assert net[0].weight.state == "deferred"
    assert net.to_numpy(net(inputs(2, 4))).shape == (2, 4)
    assert list(up.params(net)) == ["0.weight", "0.bias"]
