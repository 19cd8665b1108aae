"""Messages read as English: articles, plurals (the first hour's friction points)."""

import pytest

import unifparam as up
from unifparam import _registry, init


def test_not_installed_lists_one_or_several_frameworks():
    assert _registry.not_installed(("unifparam_no_a",)) == "unifparam_no_a, which is not installed"
    assert _registry.not_installed(("unifparam_no_a", "unifparam_no_b")) == \
        "unifparam_no_a and unifparam_no_b, which are not installed"
    assert _registry.not_installed(("numpy", "unifparam_no_b")) == \
        "unifparam_no_b, which is not installed"  # only what is missing


@pytest.mark.parametrize("bad", [object(), dict])
def test_a_wrong_initializer_says_a_unifparam_init_initializer(bad):
    with pytest.raises(up.ArgumentError) as e:
        init.as_initializer(bad)
    assert "a unifparam.init initializer" in str(e.value) and "an unifparam" not in str(e.value)
