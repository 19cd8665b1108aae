"""``import unifparam`` loads only the package and its errors; every public name still works."""

import json


def test_import_unifparam_loads_only_the_errors_module(python):
    proc = python("import sys, json, unifparam\n"
                  "print(json.dumps(sorted(m for m in sys.modules if m.startswith('unifparam'))))")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["unifparam", "unifparam.errors"]


def test_every_public_name_resolves_to_its_module_object(python):
    code = ("import json, unifparam\n"
            "from unifparam import _verbs, _model, checkpoint, nn, init\n"
            "missing = [n for n in unifparam.__all__ if not hasattr(unifparam, n)]\n"
            "same = [unifparam.build is _verbs.build, unifparam.Model is _model.Model,\n"
            "        unifparam.save is checkpoint.save, unifparam.nn is nn,\n"
            "        unifparam.init is init, set(unifparam.__all__) <= set(dir(unifparam))]\n"
            "print(json.dumps([missing, same]))")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[], [True] * 6]


def test_an_unknown_attribute_is_an_attribute_error(python):
    proc = python("import unifparam\n"
                  "try:\n    unifparam.no_such_name\n"
                  "except AttributeError as e:\n    print(e)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "module 'unifparam' has no attribute 'no_such_name'"
