"""The core never imports a framework; adapters import theirs only when asked for."""

import json

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "mxnet")


def test_import_unifparam_imports_no_framework(python):
    code = ("import sys, json, unifparam, unifparam.nn, unifparam.init, unifparam.conformance, "
            "unifparam.conformance.plugin\n"
            "unifparam.backends()\n"
            "for name in ('unifparam_torch', 'unifparam_keras', 'unifparam_flax'):\n"
            "    try: __import__(name)\n"
            "    except ImportError: pass\n"
            f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_building_a_spec_imports_only_the_chosen_framework(python):
    code = ("import sys, json, unifparam as up\n"
            "up.build(up.nn.Sequential(up.nn.Dense(2)), backend='torch')\n"
            f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["torch"]


def test_build_detects_the_framework_of_a_native_model(python):
    code = ("import torch, unifparam as up\n"
            "net = up.build(torch.nn.Sequential(torch.nn.Linear(3, 2)))\n"
            "print(net.backend, list(up.params(net)))")
    proc = python(code, env={"UNIFPARAM_BACKEND": "no-such-backend"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch ['0.weight', '0.bias']"


def test_import_unifparam_defers_numpy_and_entry_points(python):
    proc = python("import sys, unifparam; print(sorted(m for m in ('numpy', 'importlib.metadata',"
                  " 'rich', 'safetensors') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
