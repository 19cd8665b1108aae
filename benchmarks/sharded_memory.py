"""Per-rank peak memory of sharded materialization against the bytes each rank owns.

    python -m benchmarks.sharded_memory                 # torch, 2 and 4 gloo ranks on CPU
    python -m benchmarks.sharded_memory --ranks 2 --width 2048 --depth 4

Each rank builds the model, warms up on a tiny sharded one (DTensor's imports are the
framework's baseline), resets its peak resident set (``/proc/self/clear_refs``), then
``materialize(net, mesh=..., layout=...)`` with a seeded initializer, weights split by rows
and columns alternately. It reports the growth of its peak resident set over the moment
before, next to the bytes of its own shards (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def worker(width: int, depth: int) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    import unifparam
    from unifparam import init, nn

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("model",))
    net = unifparam.build(nn.Sequential(*[nn.Dense(width, use_bias=False)
                                          for _ in range(depth)]), backend="torch")
    unifparam.initialize(net, init.Normal(std=0.02), seed=0)
    layout = {f"{i}.weight": ("model", None) if i % 2 == 0 else (None, "model")
              for i in range(depth)}
    # the framework's baseline (DTensor's first-use imports, about 70 MiB) is not counted
    warm = unifparam.build(nn.Sequential(nn.Dense(world * 2)), backend="torch")
    unifparam.initialize(warm, init.Normal(std=0.02), seed=0)
    unifparam.materialize(warm, input_shape=(1, 4), mesh=mesh,
                          layout={"*.weight": ("model", None)})
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak resident set := current
    before = _status("VmRSS:")
    unifparam.materialize(net, input_shape=(1, width), mesh=mesh, layout=layout)
    peak = _status("VmHWM:") - before
    owned = sum(p.native.to_local().numel() * p.native.to_local().element_size()
                for p in unifparam.params(net).values())
    rows = [None] * world
    dist.all_gather_object(rows, {"rank": rank, "owned": owned, "peak": peak})
    if rank == 0:
        print(json.dumps({"ranks": world, "width": width, "depth": depth, "rows": rows}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.width, args.depth)
    print(f"{'ranks':>5} {'rank':>4} {'owned MiB':>10} {'peak MiB':>9} {'peak/owned':>10}")
    for n in (int(r) for r in args.ranks.split(",")):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={n}", "-m", "benchmarks.sharded_memory",
                              "--worker", f"--width={args.width}", f"--depth={args.depth}"],
                             capture_output=True, text=True, env=env, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        for row in result["rows"]:
            print(f"{n:>5} {row['rank']:>4} {row['owned'] / 2**20:>10.1f} "
                  f"{row['peak'] / 2**20:>9.1f} {row['peak'] / row['owned']:>10.2f}")


if __name__ == "__main__":
    main()
