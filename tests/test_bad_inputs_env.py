"""Bad environment: a misspelled KERAS_BACKEND is a typed error, not Keras's ValueError.

Keras fixes its backend once per process, so the check runs in a fresh interpreter.
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("keras")

SCRIPT = """
import unifparam as up
from unifparam import nn
try:
    up.build(nn.Sequential(nn.Dense(2)), backend="keras")
except up.BackendNotFoundError as e:
    assert isinstance(e, LookupError)
    print("TYPED", e)
"""


def test_misspelled_keras_backend_is_a_typed_error():
    env = {**os.environ, "KERAS_BACKEND": "jaxx"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TYPED" in done.stdout and "KERAS_BACKEND='jaxx'" in done.stdout
