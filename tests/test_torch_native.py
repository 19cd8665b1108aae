"""Adopting native torch modules: names equal torch's, the verbs work, known traps are closed."""

import numpy as np
import pytest

import unifparam as up
from unifparam import init

torch = pytest.importorskip("torch")
tnn = torch.nn


def shared_nested():
    shared = tnn.Linear(8, 8)
    block = tnn.Sequential(tnn.Linear(4, 8), tnn.ReLU(), shared, tnn.ReLU(), shared)
    return tnn.Sequential(block, tnn.ReLU(), tnn.Linear(8, 1)), shared


def test_adopted_names_and_shapes_equal_named_parameters():
    model, _ = shared_nested()
    net = up.build(model)
    assert net.backend == "torch"
    ours = [(n, p.shape) for n, p in up.params(net).items()]
    theirs = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert ours == theirs
    assert up.params(net)["0.2.weight"].aliases == ("0.4.weight",)
    assert net[0][4].weight.native is model[0][2].weight


def test_lazy_native_model_lists_unknown_dims_and_initializes_once(capsys):
    model = tnn.Sequential(tnn.LazyLinear(16), tnn.ReLU(), tnn.LazyLinear(2))
    net = up.build(model)
    assert [p.shape for p in up.params(net).values()] == [(16, None), (16,), (2, None), (2,)]
    up.initialize(net, lambda n, s, rng: print("Init", n, s) or np.ones(s))
    assert capsys.readouterr().out == ""
    y = net(np.zeros((3, 5), np.float32))
    assert capsys.readouterr().out.splitlines() == ["Init 0.weight (16, 5)",
                                                    "Init 2.weight (2, 16)"]
    assert tuple(y.shape) == (3, 2)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), np.ones((16, 5)))
    assert type(model[0]) is tnn.Linear  # L13: the lazy layer became a plain Linear


def test_native_abstract_materialization_uses_the_meta_device():
    model = tnn.Sequential(tnn.LazyLinear(1000), tnn.ReLU(), tnn.LazyLinear(1000))
    net = up.build(model)
    up.initialize(net, init.Normal(std=0.02), seed=0)
    up.materialize(net, input_shape=(1, 1000), abstract=True)
    assert all(p.native.is_meta for p in up.params(net).values())
    assert [p.state for p in up.params(net).values()] == ["abstract"] * 4
    up.materialize(net)
    expected = init.Normal(std=0.02).generate(init.Target("2.weight", (1000, 1000)), 0)
    np.testing.assert_array_equal(net[2].weight.numpy(), expected)


def test_native_tie_survives_meta_then_to_empty():
    with torch.device("meta"):  # build big models without memory (module.to("meta") unties)
        enc, dec = tnn.Linear(4, 4), tnn.Linear(4, 4)
        dec.weight = enc.weight  # the torch way of tying
        model = tnn.Sequential(enc, dec)
    net = up.build(model)
    assert list(up.params(net)) == ["0.weight", "0.bias", "1.bias"]
    up.materialize(net)  # to_empty would untie them; unifparam re-ties
    assert model[1].weight is model[0].weight
    net[0].weight[0, 0] = 7
    assert net[1].weight[0, 0] == 7


def test_explicit_tie_on_native_modules_and_gradients_add_up():
    model = tnn.Sequential(tnn.Linear(3, 3), tnn.Tanh(), tnn.Linear(3, 3))
    net = up.build(model)
    up.tie(net, net[0], net[2])
    assert model[2].weight is model[0].weight
    assert [n for n, _ in model.named_parameters()] == list(up.params(net))
    x = np.random.default_rng(0).random((2, 3), dtype=np.float32)
    g = up.gradients(net, x)
    xt = torch.from_numpy(x)
    w, b = (t.detach().clone().requires_grad_() for t in (model[0].weight, model[0].bias))
    out = torch.tanh(xt @ w.T + b) @ w.T + b
    out.sum().backward()
    np.testing.assert_allclose(g["0.weight"], w.grad.numpy(), rtol=1e-5)


def test_native_apply_visits_containers_too():
    net = up.build(up.nn.Sequential(up.nn.Dense(8, activation="relu"), up.nn.Dense(1)),
                   backend="torch")
    net(np.zeros((2, 4), np.float32))
    seen = []

    def xavier(m):
        seen.append(type(m).__name__)
        if isinstance(m, tnn.Linear):
            tnn.init.xavier_uniform_(m.weight)

    net.native.apply(xavier)
    assert seen == ["Dense", "Dense", "Sequential"]
    assert np.abs(net[0].weight.numpy()).max() <= np.sqrt(6 / 12)


def test_buffers_are_non_trainable_params():
    net = up.build(tnn.Sequential(tnn.Linear(2, 3), tnn.BatchNorm1d(3)))
    listed = {n: (p.shape, p.trainable, p.role) for n, p in up.params(net).items()}
    assert listed["1.running_mean"] == ((3,), False, "running_mean")
    assert listed["1.weight"] == ((3,), True, "scale")
    assert "1.num_batches_tracked" not in listed


def test_a_block_attribute_named_like_a_module_method_is_a_spec_error():
    from unifparam import nn

    class Trainer(nn.Block):
        def __init__(self):
            super().__init__()
            self.train = nn.Dense(3)  # torch.nn.Module.train: the torch module cannot hold it

        def forward(self, x):
            return self.train(x)

    with pytest.raises(up.SpecError,
                       match=r"'train' is taken on some backend \(a method of torch.nn.Module"):
        up.build(Trainer(), backend="torch")


def test_a_hand_made_plan_with_no_default_and_no_fallback_names_the_storage():
    from unifparam_torch._adapter import TorchBackend

    from unifparam import Plan, Storage

    class Scale(torch.nn.Module):  # no reset_parameters: torch has no default for it
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(3, device="meta"))

    module = Scale()
    plan = Plan({"weight": Storage("weight", (module, "weight"), (3,), "float32")})
    with pytest.raises(up.InitializerError, match="'weight': Scale has no reset_parameters"):
        TorchBackend().allocate(module, plan)
