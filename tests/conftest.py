"""Shared helpers for the repository's own tests (the shipped suite is unifparam.conformance)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (frameworks fix state per process)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture
def python():
    return run_python
