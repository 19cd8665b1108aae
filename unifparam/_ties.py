"""Tie bookkeeping: check that two storages can become one, then make them one.

:func:`check_tie` raises before anything changes; :func:`apply_tie` records the alias and
re-points native storage once both sides have it (else :func:`unifparam._plan.apply_ties`
does so after allocation).

    >>> root, other, t = check_tie(st, "0.weight", "2.weight", False)   # doctest: +SKIP
    >>> apply_tie(st, root, other, t)                                  # doctest: +SKIP
"""

from __future__ import annotations

from ._backend import ABSTRACT, MATERIALIZED
from ._state import Alias, ModelState, flip, unify
from .errors import TieError, UnsupportedError, fmt_shape


def check_tie(st: ModelState, a: str, b: str, transpose: bool) -> tuple[str, str, bool]:
    ra, ta = st.resolve(a)
    rb, tb = st.resolve(b)
    if a == b:
        raise TieError(f"tie: a and b are both '{a}'; a parameter is already its own storage. "
                       f"Tie two different parameters, e.g. tie(net, '0.weight', "
                       f"'2.weight').")
    t = transpose ^ ta ^ tb  # b's root must be (a's root)ᵀ^t
    if ra == rb:
        if t:
            raise TieError(f"'{a}' and '{b}' are already one storage; they cannot also be "
                           f"each other's transpose.")
        return ra, rb, False
    if t and "transpose_tie" not in st.backend.capabilities:
        raise UnsupportedError(f"Backend {st.backend.name!r} cannot tie '{a}' and '{b}' "
                               f"transposed. Tie parameters of equal shapes instead.")
    sa, sb = st.slots[ra], st.slots[rb]
    shape_a, shape_b = st.status(ra)[0], st.status(rb)[0]
    if (sa.dtype, sa.trainable) != (sb.dtype, sb.trainable):
        raise TieError(f"Cannot tie '{a}' ({sa.dtype}, trainable={sa.trainable}) with '{b}' "
                       f"({sb.dtype}, trainable={sb.trainable}): both must agree.")
    if unify(flip(shape_a, t), shape_b) is False:
        how = " transposed" if t else ""
        raise TieError(f"Cannot tie '{a}' of shape {fmt_shape(shape_a)}{how} with '{b}' of "
                       f"shape {fmt_shape(shape_b)}: the shapes differ. Tie parameters of "
                       f"equal shapes{', or pass transpose=True' if not t else ''}.")
    if t and shape_a is not None and len(shape_a) != 2:
        raise TieError(f"transpose=True needs 2-D parameters; '{a}' has shape "
                       f"{fmt_shape(shape_a)}.")
    return ra, rb, t


def apply_tie(st: ModelState, root: str, old_root: str, t: bool) -> None:
    if root == old_root:
        return
    (shape_a, state_a), (shape_b, state_b) = st.status(root), st.status(old_root)
    sa, sb = st.slots[root], st.slots.pop(old_root)
    sa.shape = unify(shape_a, flip(shape_b, t)) or shape_a  # type: ignore[assignment]
    carry = None
    if state_b == MATERIALIZED and state_a != MATERIALIZED:
        carry = st.backend.read(st.native, sb.ref)  # the only values there are: keep them
    st.aliases[old_root] = Alias(root, t, native=False, ref=sb.ref, carry=carry)
    for name, alias in st.aliases.items():  # b's other names now follow a's storage
        if alias.root == old_root and name != old_root:
            alias.root, alias.transpose = root, alias.transpose ^ t
    if state_a == state_b and state_a in (ABSTRACT, MATERIALIZED):
        st.call("alias", sa.ref, sb.ref, t)
