"""unifparam's MXNet Gluon adapter. Importing this package does not import mxnet.

Registered through the ``unifparam.backends`` entry point as :data:`INFO`; the adapter
itself (``_adapter.MXNetBackend``) is loaded only when the backend is asked for.
MXNet 1.9.1 runs on Python <= 3.11 beside numpy < 1.24 (``nox -s mxnet`` sets that up).
"""

from unifparam import BackendInfo

INFO = BackendInfo(
    name="mxnet",
    requires=("mxnet",),
    distribution="mxnet",
    native_types=("mxnet.gluon.block.Block",),
    install="pip install 'unifparam[mxnet]' (Python <= 3.11)",
    loader="unifparam_mxnet._adapter:MXNetBackend",
)
