"""The shared conformance suite: every scenario (P1-P14, L1-L13) and error case, per backend.

It ships in the wheel so a backend author runs it against a new adapter::

    pytest --pyargs unifparam.conformance --unifparam-backend mine
    unifparam conformance --backend all --json results.json

Tests receive the backend through fixtures (``backend``, ``build``). A test that needs a
capability the adapter does not declare, or that is listed in the adapter's
``expected_failures.txt``, is marked xfail (strict): a gap shows as such, never as a skip.
"""

import re

SCENARIO = re.compile(r"(?<![A-Za-z0-9])([PL]\d{1,2})(?![0-9])")


def scenario_of(test_name: str) -> str | None:
    """The scenario ID a test name cites (``test_L3_first_forward`` -> ``L3``), if any."""
    m = SCENARIO.search(test_name.replace("_", " "))
    return m.group(1) if m else None
