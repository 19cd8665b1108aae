"""unifparam's Keras 3 adapter. Importing this package imports neither keras nor its backend.

Registered through the ``unifparam.backends`` entry point as :data:`INFO`. A variant
(``keras:jax``) selects ``KERAS_BACKEND`` before Keras is first imported::

    >>> unifparam.build(spec, backend="keras:jax")   # doctest: +SKIP
"""

from unifparam import BackendInfo

INFO = BackendInfo(
    name="keras",
    requires=("keras",),
    distribution="keras",
    native_types=("keras.src.models.model.Model", "keras.src.layers.layer.Layer",
                  "keras.src.ops.operation.Operation"),
    install="pip install 'unifparam[keras]' (plus tensorflow, jax or torch)",
    loader="unifparam_keras._adapter:KerasBackend",
    variants=("tensorflow", "jax", "torch"),
)
