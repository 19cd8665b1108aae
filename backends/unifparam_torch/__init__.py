"""unifparam's PyTorch adapter. Importing this package does not import torch.

Registered through the ``unifparam.backends`` entry point as :data:`INFO`; the adapter
itself (``_adapter.TorchBackend``) is loaded only when the backend is asked for.
"""

from unifparam import BackendInfo

INFO = BackendInfo(
    name="torch",
    requires=("torch",),
    distribution="torch",
    native_types=("torch.nn.modules.module.Module",),
    install="pip install 'unifparam[torch]'",
    loader="unifparam_torch._adapter:TorchBackend",
)
