"""Bad inputs outside the conformance catalogue: the environment, and the good inputs that
the new checks must keep accepting.

Keras fixes its backend once per process, so the KERAS_BACKEND check runs in a fresh
interpreter.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

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
    pytest.importorskip("keras")
    env = {**os.environ, "KERAS_BACKEND": "jaxx"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TYPED" in done.stdout and "KERAS_BACKEND='jaxx'" in done.stdout


def test_good_spec_arguments_are_still_accepted():
    assert nn.Dense(np.int64(8)).units == 8 and type(nn.Dense(np.int64(8)).units) is int
    assert nn.Conv2D(4, [3, 5]).kernel_size == (3, 5)
    assert nn.Conv2D(4, 3, padding=np.int32(1)).padding == 1
    assert nn.LayerNorm(eps=1).eps == 1.0
    assert nn.BatchNorm(momentum=0).momentum == 0.0 and nn.BatchNorm(momentum=1).momentum == 1.0
    assert nn.Dropout(0).rate == 0.0
    assert nn.Dense(8, use_bias=False).param_decls()[-1].name == "weight"


def test_new_error_classes_subclass_their_builtins():
    assert issubclass(up.SpecTypeError, up.SpecError) and issubclass(up.SpecTypeError, TypeError)
    assert issubclass(up.ArgumentError, TypeError)
    assert issubclass(up.ArgumentValueError, ValueError)
    assert issubclass(up.ParamIndexError, IndexError)


def test_a_wrapped_function_is_not_a_builtin_initializer():
    assert init.is_builtin(init.Normal(std=0.1))
    assert not init.is_builtin(init.as_initializer(lambda name, shape, rng: np.ones(shape)))
