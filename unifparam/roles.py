"""Roles and logical axes of parameters: decided here, once, for every adapter.

A parameter's *role* says what it is for (and so how model-wide initializers treat it):
``weight``, ``bias``, ``embedding``, ``scale``, ``shift``, ``running_mean``,
``running_var``. Its *axes* name its canonical dimensions (``("out", "in", "kh", "kw")``),
which give fan-in and fan-out and the layout changes. Adapters only say which *family*
a layer belongs to and the parameter's canonical local name.

    >>> classify("conv", "weight", 4)
    ('weight', ('out', 'in', 'kh', 'kw'))
    >>> classify(family_of("LlamaRMSNorm"), "weight", 1)
    ('scale', ('out',))
"""

from __future__ import annotations

FAMILIES = ("dense", "conv", "embedding", "norm", "other")
ROLES = ("weight", "bias", "embedding", "scale", "shift", "running_mean", "running_var")
STATISTICS = ("running_mean", "running_var")


#: Framework variable names (Keras, Flax) and the canonical local name each means.
NATIVE_NAMES = {"kernel": "weight", "embeddings": "weight", "embedding": "weight",
                "gamma": "weight", "scale": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}


def local_name(native: str) -> str:
    """The canonical local name of a framework's variable name (others are kept as they are).

    >>> local_name("kernel"), local_name("moving_variance"), local_name("cls_token")
    ('weight', 'running_var', 'cls_token')
    """
    return NATIVE_NAMES.get(native, native)


def family_of(type_name: str) -> str:
    """The family of a layer class the adapter does not know, guessed from its name.

    >>> family_of("LayerNorm"), family_of("Conv2d"), family_of("DenseGeneral"), family_of("MLP")
    ('norm', 'conv', 'dense', 'other')
    """
    name = type_name.lower()
    if "norm" in name:
        return "norm"
    if "embed" in name:
        return "embedding"
    if "conv" in name and "transpose" not in name:
        return "conv"
    if "linear" in name or "dense" in name:
        return "dense"
    return "other"


def classify(family: str, local: str, ndim: int | None) -> tuple[str, tuple[str, ...] | None]:
    """(role, logical axes) of the parameter named ``local`` (canonical: ``weight``,
    ``bias``, ``running_mean``, ...) of ``ndim`` dimensions in a layer of ``family``.

    Axes are None where the layout is not known (an unknown layer's weight): initializers
    then use PyTorch's positional fan rule.
    """
    if local in STATISTICS:
        return local, ("out",)
    if family == "norm":
        return ("shift" if local == "bias" else "scale"), ("out",)
    if local == "bias":
        return "bias", ("out",)
    if family == "embedding":
        return "embedding", ("vocab", "embed")
    if family == "conv" and ndim is not None and 3 <= ndim <= 5:
        return "weight", ("out", "in", *("kd", "kh", "kw")[5 - ndim:])
    if family == "dense" and ndim == 2:
        return "weight", ("out", "in")
    return "weight", None
