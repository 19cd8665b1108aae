"""What a block may hold and write, checked once in the core so that every backend refuses
the same spellings, at the same moment (assignment), with the portable spelling to use.

- names: a sublayer or parameter may not take a name some backend's module class or
  :class:`unifparam.nn.Block` itself uses (``train``, ``params``, ``forward``, ...);
- arrays (numpy's or a framework's) are not held as attributes: each framework must own
  its arrays, so a fixed array is a frozen parameter (``nn.Parameter(shape, init=...,
  trainable=False)``) or is made in ``forward`` with :mod:`unifparam.ops`;
- a list or dict of layers is a :class:`~unifparam.nn.Sequential` (and must hold layers only).

    >>> check_name("Net", "hidden")
    >>> check_name("Net", "train")
    Traceback (most recent call last):
    ...
    unifparam.errors.SpecError: Block Net: the attribute name 'train' is taken on some backend ...
"""

from __future__ import annotations

from typing import Any

from .errors import SpecError, SpecTypeError

#: attribute names of torch.nn.Module, MXNet's gluon.Block, flax's linen and NNX modules
#: and keras.Layer that a sublayer or parameter would shadow on that backend
RESERVED = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
get_submodule half ipu load_state_dict modules mtia named_buffers named_children
named_modules named_parameters parameters register_backward_hook register_buffer
register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter
register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
set_submodule share_memory state_dict to to_empty train type xpu zero_grad
cast collect_params hybridize initialize load load_parameters load_params name name_scope
params prefix register_child register_op_hook save save_parameters save_params summary
build call parent scope variables setup init bind unbind param variable sow
describe parameter own_parameters param_decls kind infer minimal_input given_input_size
""".split())


def check_name(block: str, name: Any) -> None:
    """Refuse a sublayer or parameter name that is not portable (see :data:`RESERVED`)."""
    if not isinstance(name, str) or not name or "." in name:
        raise SpecTypeError(f"Block {block}: a sublayer or parameter name must be a non-empty "
                            f"str without '.', got {name!r}.")
    if name in RESERVED:
        raise SpecError(
            f"Block {block}: the attribute name {name!r} is taken on some backend (a method "
            f"of torch.nn.Module, gluon.Block, flax's modules, keras.Layer or nn.Block), so "
            f"it is refused on every backend. Rename it, e.g. self.{name}_ = ...")


def is_array(value: Any) -> bool:
    """True for numpy's and the frameworks' arrays (anything with a shape and a dtype that
    converts to numpy), not for Python numbers."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and (
        hasattr(value, "__array__") or hasattr(value, "asnumpy"))


def check_value(block: str, name: str, value: Any) -> None:
    """Refuse an array held as an attribute, and a list or dict mixing layers with other
    things (``Layer`` is passed in by the caller's module)."""
    if is_array(value):
        shape = tuple(int(d) for d in value.shape)
        raise SpecTypeError(
            f"Block {block}: attribute {name!r} holds an array ({type(value).__name__} of "
            f"shape {shape}); an array held by a block is not portable (each framework owns "
            f"its arrays). Hold it as a fixed parameter, self.{name} = nn.Parameter({shape}, "
            f"init=..., trainable=False), or make it in forward with unifparam.ops "
            f"(ops.ones, ops.rand, ...).")


def check_container(block: str, name: str, value: Any, layer_type: type) -> Any:
    """A list/tuple/dict of layers as the items for a Sequential (None if ``value`` holds
    no layer); refuses one that mixes layers with other values."""
    items = list(value.values()) if isinstance(value, dict) else \
        list(value) if isinstance(value, (list, tuple)) else None
    if not items or not any(isinstance(v, layer_type) for v in items):
        return None
    bad = next(((i, v) for i, v in enumerate(items) if not isinstance(v, layer_type)), None)
    if bad is not None:
        raise SpecTypeError(
            f"Block {block}: attribute {name!r} mixes layers with other values (item "
            f"{bad[0]} is {type(bad[1]).__name__} {bad[1]!r:.40}); a list or "
            f"dict of layers becomes an nn.Sequential and may hold layers only. Keep the "
            f"other values in another attribute, or name each layer: "
            f"self.add_module('name', layer).")
    if isinstance(value, dict):
        for key in value:
            check_name(block, key)
        return [dict(value)]
    return items
