"""Precision rows (issue 22's Memory and speed), side by side in one run, each in a fresh
process: seeded materialization of the 400M MLP on torch in float32 and bfloat16, and
torch's own bfloat16 eager construction, with wall time and peak RSS.

    python -m benchmarks.precision            # prints a markdown table, targets met/missed
"""

from __future__ import annotations

import json
import subprocess
import sys

_RUN = """
import json, resource, sys, time
import torch
from benchmarks.models import MODELS, spec, torch_model
m = MODELS["400m"]
what = sys.argv[1]
start = time.perf_counter()
if what == "torch-bf16-eager":
    torch.set_default_dtype(torch.bfloat16)
    net = torch_model(m)
    nbytes = sum(p.numel() * p.element_size() for p in net.parameters())
else:
    import unifparam as up
    from unifparam import init
    net = up.build(spec(m), backend="torch", dtype=what)
    up.initialize(net, init.Default(), seed=0)
    up.materialize(net, input_shape=(1, m.in_features))
    nbytes = sum(p.numel() * p.element_size() for p in net.native.parameters())
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"what": what, "seconds": elapsed, "peak": peak, "nbytes": nbytes}))
"""


def run(what: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RUN, what], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = {w: run(w) for w in ("float32", "bfloat16", "torch-bf16-eager")}
    f32, bf16, eager = rows["float32"], rows["bfloat16"], rows["torch-bf16-eager"]
    print("| row | seconds | peak RSS (GB) | parameter bytes (GB) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.2f} | {r['peak'] / 1e9:.2f} | {r['nbytes'] / 1e9:.2f} |")
    print()
    print(f"- seeded bf16 no slower than seeded float32: {bf16['seconds']:.2f} s vs "
          f"{f32['seconds']:.2f} s: {'met' if bf16['seconds'] <= f32['seconds'] else 'missed'}")
    print(f"- seeded bf16 at most 0.5x torch's bf16 eager init: {bf16['seconds']:.2f} s vs "
          f"{eager['seconds']:.2f} s ({bf16['seconds'] / eager['seconds']:.2f}x): "
          f"{'met' if bf16['seconds'] <= 0.5 * eager['seconds'] else 'missed'}")
    print(f"- bf16 peak RSS vs bf16 bytes: {bf16['peak'] / 1e9:.2f} GB for "
          f"{bf16['nbytes'] / 1e9:.2f} GB of parameters (float32 run: {f32['peak'] / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
