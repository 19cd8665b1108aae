"""pytest plugin of the conformance suite: the backend fixture, capability and xfail marks.

Loaded automatically (entry point ``pytest11``); it adds ``--unifparam-backend`` and
``--unifparam-json``. Imports no framework until a test asks for the backend.
"""

from __future__ import annotations

import json
import os
from functools import partial
from importlib import resources
from typing import Any

import pytest

from . import scenario_of


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unifparam")
    group.addoption("--unifparam-backend", default=None,
                    help="backend the conformance suite runs on (default: UNIFPARAM_BACKEND)")
    group.addoption("--unifparam-json", default=None,
                    help="write per-test outcomes (for the conformance matrix) to this file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(capability): needs a backend capability")
    config._unifparam_results = []  # type: ignore[attr-defined]


def backend_name(config: pytest.Config) -> str:
    from .._registry import default_name
    return config.getoption("--unifparam-backend") or default_name()


def expected_failures(name: str) -> dict[str, str]:
    """The adapter's ``expected_failures.txt``: test-id substring -> reason."""
    from .._registry import info, split_name
    package = info(name).loader.split(":")[0].split(".")[0]
    base, variant = split_name(name)
    out: dict[str, str] = {}
    for fname in ("expected_failures.txt", f"expected_failures_{variant}.txt"):
        try:
            text = resources.files(package).joinpath(fname).read_text()
        except (FileNotFoundError, ModuleNotFoundError):
            continue
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, reason = line.partition(" ")
                out[key] = reason.strip() or "listed in expected_failures"
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [i for i in items if i.nodeid.replace("\\", "/").find("unifparam/conformance/") >= 0
            or "conformance" in getattr(i.module, "__name__", "")]
    if not ours:
        return
    name = backend_name(config)
    from .._registry import get_backend
    caps = get_backend(name).capabilities
    listed = expected_failures(name)
    for item in ours:
        for mark in item.iter_markers("requires"):
            missing = [c for c in mark.args if c not in caps]
            if missing:
                item.add_marker(pytest.mark.xfail(
                    strict=True, reason=f"backend {name!r} lacks capability {', '.join(missing)}"))
        for key, reason in listed.items():
            if key in item.nodeid:
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend under test (``torch``, ``keras:jax``, ...)."""
    return backend_name(request.config)


@pytest.fixture
def build(backend: str) -> Any:
    """``unifparam.build`` bound to the backend under test."""
    import unifparam
    return partial(unifparam.build, backend=backend)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        state = "xfail" if hasattr(report, "wasxfail") and report.outcome != "failed" else (
            report.outcome)
        if hasattr(report, "wasxfail") and report.outcome == "failed":
            state = "xpass"  # strict xfail that passed: the expected-failures entry is stale
        module = getattr(item.module, "__name__", "").rsplit(".", 1)[-1].removeprefix("test_")
        item.config._unifparam_results.append({  # type: ignore[attr-defined]
            "test": item.nodeid.split("::", 1)[-1], "scenario": scenario_of(item.name),
            "group": module, "outcome": state})


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--unifparam-json")
    if path:
        name = backend_name(session.config)
        with open(path, "w") as f:
            json.dump({"backend": name, "pid": os.getpid(),
                       "results": session.config._unifparam_results}, f, indent=1)  # type: ignore[attr-defined]

