"""Adapters use only the public adapter API (unifparam.backend and the public modules).

A third-party adapter written from docs/backend-guide.md imports the same names; a built-in
adapter reaching into a private ``unifparam._*`` module would make the guide a lie.
"""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import unifparam.backend

BACKENDS = pathlib.Path(__file__).resolve().parents[1] / "backends"
ADAPTER_FILES = sorted(BACKENDS.glob("unifparam_*/*.py"))


def _private_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [f"{path.parent.name}/{path.name}:{node.lineno}: {n}" for n in names
                  if n.startswith("unifparam._")
                  or (n.startswith("unifparam.") and n.split(".")[1].startswith("_"))]
    return found


@pytest.mark.parametrize("path", ADAPTER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_adapter_file_imports_a_private_module(path):
    assert _private_imports(path) == []


def test_the_checker_sees_a_private_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from unifparam._binding import bound\n")
    assert _private_imports(bad) == [f"{tmp_path.name}/x.py:2: unifparam._binding",
                                     f"{tmp_path.name}/x.py:2: unifparam._binding.bound"]


_BLOCKED_IMPORT = r'''
import builtins, importlib, sys
real = builtins.__import__
def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if importer.startswith("unifparam_") and name.startswith("unifparam._"):
        raise ImportError(f"{importer} imports private {name}")
    return real(name, globals, locals, fromlist, level)
builtins.__import__ = guarded
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:  # the framework is not installed in this environment
        if (e.name or "").startswith("unifparam"):
            raise
        print("skip", module, e)
print("ok")
'''


def test_each_adapter_imports_with_the_private_modules_blocked():
    modules = [f"{p.parent.name}.{p.stem}" if p.stem != "__init__" else p.parent.name
               for p in ADAPTER_FILES if p.parent.name != "unifparam_mxnet"]
    out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT, *modules],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_every_name_an_adapter_imports_from_the_public_module_is_there():
    for path in ADAPTER_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "unifparam.backend":
                for alias in node.names:
                    assert hasattr(unifparam.backend, alias.name), (path.name, alias.name)


def test_every_name_the_guide_promises_is_public():
    guide = (BACKENDS.parent / "docs" / "backend-guide.md").read_text()
    for name in unifparam.backend.__all__:
        assert hasattr(unifparam.backend, name), name
    assert "from unifparam.backend import" in guide


def test_the_public_module_is_the_private_objects():
    # one object, two names: an adapter and the core agree on identity (isinstance, ==)
    private = importlib.import_module("unifparam._backend")
    assert unifparam.backend.Backend is private.Backend
    assert unifparam.backend.WRITE == private.WRITE
