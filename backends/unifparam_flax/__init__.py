"""unifparam's Flax adapters: linen (``flax``, ``flax:linen``) and NNX (``flax:nnx``).

Importing this package does not import jax or flax. Registered through the
``unifparam.backends`` entry point as :data:`INFO`; :func:`backend` loads the adapter of a
variant only when it is asked for.

    >>> import unifparam
    >>> net = unifparam.build(spec, backend="flax")       # doctest: +SKIP
    >>> module, variables = net.native                    # doctest: +SKIP
    >>> net = unifparam.build(spec, backend="flax:nnx")   # doctest: +SKIP
    >>> net.native                                        # a live nnx.Module  # doctest: +SKIP
"""

from typing import Any

from unifparam import BackendInfo

INFO = BackendInfo(
    name="flax",
    requires=("jax", "flax"),
    distribution="flax",
    native_types=("flax.linen.module.Module",),
    install="pip install 'unifparam[flax]'",
    loader="unifparam_flax:backend",
    variants=("linen", "nnx"),
    variant_types=(("flax.nnx.module.Module", "nnx"),),
)


def backend(variant: str | None = None) -> Any:
    """The adapter of ``variant``: linen's ``FlaxBackend`` (None or "linen") or ``NNXBackend``."""
    if variant == "nnx":
        from ._nnx import NNXBackend
        return NNXBackend()
    from ._adapter import FlaxBackend
    return FlaxBackend()
