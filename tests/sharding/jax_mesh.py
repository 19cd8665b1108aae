"""Run in a subprocess with 8 host devices: a (2, 4) mesh, flax; prints OK lines."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import unifparam  # noqa: E402
from unifparam import init, nn  # noqa: E402

BACKEND = sys.argv[1] if len(sys.argv) > 1 else "flax"
LAYOUT = {"0.weight": ("model", "data"),   # (out, in): rows over model, columns over data
          "2.weight": (None, "model"),     # a column shard only
          "*.bias": ("model",)}


def native(net, name):
    """The parameter's jax array (a Keras Variable holds one)."""
    value = unifparam.params(net)[name].native
    return getattr(value, "value", value)


def model(seed_init):
    net = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"), nn.Dense(8)),
                          backend=BACKEND)
    unifparam.initialize(net, seed_init, seed=3)
    return net


def main() -> None:
    assert jax.device_count() == 8, jax.device_count()
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    x = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)
    for name, seed_init in {"normal": init.Normal(std=0.5), "default": init.Default(),
                            "uniform": init.Uniform(-1, 1),
                            "truncated": init.TruncatedNormal(std=0.1)}.items():
        ref = model(seed_init)
        unifparam.materialize(ref, x)
        net = model(seed_init)
        unifparam.materialize(net, x, mesh=mesh, layout=LAYOUT)
        for pname, p in unifparam.params(net).items():
            arr = getattr(p.native, "value", p.native)  # a Keras Variable holds a jax array
            assert isinstance(arr.sharding, jax.sharding.NamedSharding), (pname, arr.sharding)
            assert len(arr.addressable_shards) == 8
            np.testing.assert_array_equal(p.numpy(), unifparam.params(ref)[pname].numpy())
        w0 = native(net, "0.weight")  # flax kernel (in, out) = (12, 16)
        assert w0.sharding.spec == jax.sharding.PartitionSpec("data", "model"), w0.sharding.spec
        assert w0.addressable_shards[0].data.shape == (6, 4)
        w2 = native(net, "2.weight")  # (16, 8) native, canonical (8, 16)
        assert w2.sharding.spec == jax.sharding.PartitionSpec("model", None)
        # sharded matmuls sum in another order: outputs agree to rounding
        np.testing.assert_allclose(np.asarray(net(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)
        print("OK bit-identical", name)
    # abstract then real, with the layout; the framework default (no seed) shards too
    net = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"), nn.Dense(8)),
                          backend=BACKEND)
    unifparam.materialize(net, x, abstract=True, mesh=mesh, layout=LAYOUT)
    unifparam.materialize(net)  # the abstract model keeps its mesh and layout
    w = native(net, "0.weight")
    assert w.sharding.spec == jax.sharding.PartitionSpec("data", "model")
    net = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"), nn.Dense(8)),
                          backend=BACKEND)
    unifparam.materialize(net, x, abstract=True, mesh=mesh, layout=LAYOUT)
    net(x)  # the first call materializes, placed as planned
    assert native(net, "0.weight").sharding.spec == jax.sharding.PartitionSpec("data", "model")
    print("OK abstract then sharded default init")
    # a tie: the tied use follows its root's placement
    dense = nn.Dense(12)
    net = unifparam.build(nn.Sequential(nn.Dense(12), dense, dense), backend=BACKEND)
    unifparam.initialize(net, init.Normal(std=0.2), seed=1)
    ref = unifparam.build(nn.Sequential(nn.Dense(12), dense, dense), backend=BACKEND)
    unifparam.initialize(ref, init.Normal(std=0.2), seed=1)
    unifparam.materialize(ref, x)
    unifparam.materialize(net, x, mesh=mesh, layout={"1.weight": ("model", None)})
    np.testing.assert_allclose(np.asarray(net(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)
    print("OK shared layer")
    # checkpoints: sharded -> files -> unsharded (flax, torch) and -> sharded (other layout)
    import tempfile
    src = model(init.Normal(std=0.5))
    unifparam.materialize(src, x, mesh=mesh, layout=LAYOUT)
    want = {n: p.numpy() for n, p in unifparam.params(src).items()}
    with tempfile.TemporaryDirectory() as d:
        unifparam.save_sharded(src, d, max_shard_bytes=800)
        files = sorted(os.listdir(d))
        assert len([f for f in files if f.endswith(".safetensors")]) > 1, files
        assert "model.safetensors.index.json" in files
        from safetensors.numpy import load_file
        for f in files:
            if f.endswith(".safetensors"):
                for n, v in load_file(os.path.join(d, f)).items():
                    np.testing.assert_array_equal(v, want[n])
        for backend in ("flax", "torch"):
            plain = unifparam.build(nn.Sequential(nn.Dense(16), nn.Activation("relu"),
                                                  nn.Dense(8)), backend=backend)
            unifparam.load_sharded(plain, d)
            for n, p in unifparam.params(plain).items():
                np.testing.assert_array_equal(p.numpy(), want[n])
        other = model(init.Zeros())
        unifparam.load_sharded(other, d, mesh=mesh, layout={"*.weight": (None, "model")})
        for n, p in unifparam.params(other).items():
            np.testing.assert_array_equal(p.numpy(), want[n])
        assert native(other, "0.weight").sharding.spec == \
            jax.sharding.PartitionSpec("model", None)
    print("OK checkpoints")


if __name__ == "__main__":
    main()
