"""unifparam's Flax (linen) adapter. Importing this package does not import jax or flax.

Registered through the ``unifparam.backends`` entry point as :data:`INFO`; the adapter
itself (``_adapter.FlaxBackend``) is loaded only when the backend is asked for.

    >>> import unifparam
    >>> net = unifparam.build(spec, backend="flax")   # doctest: +SKIP
    >>> module, variables = net.native                # doctest: +SKIP
"""

from unifparam import BackendInfo

INFO = BackendInfo(
    name="flax",
    requires=("jax", "flax"),
    distribution="flax",
    native_types=("flax.linen.module.Module",),
    install="pip install 'unifparam[flax]'",
    loader="unifparam_flax._adapter:FlaxBackend",
)
