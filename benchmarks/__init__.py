"""unifparam's benchmark suite (issue 6): unifparam vs each framework's native path.

    python -m benchmarks                          # every installed backend, all sizes
    python -m benchmarks --quick                  # the chapters' small models only
    python -m benchmarks --backends torch,flax --sizes 400m --repeat 3 --markdown perf.md

Each measurement runs in a fresh subprocess (:mod:`benchmarks.worker`). This package
imports nothing but the standard library, so the ``import unifparam`` case stays cold.
"""
