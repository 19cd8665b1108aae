"""README's examples each run alone, as a reader copies one of them (tests/test_docs.py runs
them in page order, in one namespace)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
EXAMPLES = re.findall(r"^```python\n(.*?)^```", README, re.M | re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("n", range(len(EXAMPLES)))
def test_each_example_runs_alone(n, tmp_path):
    proc = subprocess.run([sys.executable, "-c", EXAMPLES[n]], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "UNIFPARAM_BACKEND": "torch"},
                          timeout=600)
    assert proc.returncode == 0, f"README example {n + 1} alone:\n{proc.stderr[-3000:]}"
