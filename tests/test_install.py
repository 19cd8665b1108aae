"""Installing: docs/install.md's commands are the noxfile's, and the install hints the
library prints work from where it was installed (a clone, a wheel file, an index)."""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from unifparam import _install

ROOT = Path(__file__).resolve().parents[1]
INSTALL_MD = (ROOT / "docs" / "install.md").read_text()
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _noxfile() -> types.ModuleType:
    """noxfile.py, imported with a stand-in for nox (the tests' environment has none)."""
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()
    fake.Session = object
    fake.session = lambda *a, **k: (lambda f: f)
    saved = sys.modules.get("nox")
    sys.modules["nox"] = fake
    try:
        spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if saved is None:
            del sys.modules["nox"]
        else:
            sys.modules["nox"] = saved


NOXFILE = _noxfile()


def _documented(args: list[str]) -> str:
    return "python3 -m pip install " + shlex.join(args)


@pytest.mark.parametrize("extras", sorted({*NOXFILE.TOUR_EXTRAS.values(), "all,test"}))
def test_install_md_gives_the_command_the_noxfile_runs(extras):
    command = _documented(NOXFILE.pip_args(extras, torch_index=""))
    assert command in INSTALL_MD, f"docs/install.md lacks: {command}"
    if "torch" in extras.split(",") or "all" in extras.split(","):  # CPU-only torch
        cpu = _documented(NOXFILE.pip_args(extras, torch_index=CPU_INDEX))
        assert "--extra-index-url" in cpu and cpu in INSTALL_MD, f"docs/install.md lacks: {cpu}"


def test_install_md_names_each_tour_configuration_with_its_extras():
    rows = dict(re.findall(r"^\| `([a-z:]+)`[^|]*\| `python3 -m pip install .*?'\.\[([a-z,]+)\]'",
                           INSTALL_MD, re.M))
    for config, extras in rows.items():
        assert NOXFILE.TOUR_EXTRAS[config] == extras, config
    assert set(rows) >= {"torch", "keras:jax", "keras:torch", "flax", "mxnet"}


def test_the_torch_index_is_an_option_and_unset_changes_nothing():
    assert NOXFILE.pip_args("all,test", torch_index="") == [
        "-c", "constraints.txt", "-e", ".[all,test]"]
    assert NOXFILE.pip_args("flax", torch_index=CPU_INDEX) == [
        "-c", "constraints.txt", "-e", ".[flax]"]  # no torch, no index
    assert NOXFILE.pip_args("mxnet,test,plot", torch_index=CPU_INDEX)[:2] == [
        "-c", "constraints-mxnet.txt"]
    assert f"UNIFPARAM_TORCH_INDEX={CPU_INDEX}" in INSTALL_MD
    assert 'os.environ.get("UNIFPARAM_TORCH_INDEX"' in (ROOT / "noxfile.py").read_text()


def test_the_tour_installs_what_the_backend_it_runs_needs(monkeypatch):
    monkeypatch.setenv("UNIFPARAM_BACKEND", "flax:nnx")
    assert NOXFILE.tour_backend(["--backend", "keras:jax"]) == "keras:jax"
    assert NOXFILE.tour_backend(["--backend=keras:torch"]) == "keras:torch"
    assert NOXFILE.tour_backend([]) == "flax:nnx"  # unifparam tour reads it too
    from unifparam._cli import every_configuration
    assert {c for c, _ in every_configuration()} <= set(NOXFILE.TOUR_EXTRAS)


def test_the_tour_installs_less_than_the_tests():
    for config, extras in NOXFILE.TOUR_EXTRAS.items():
        assert "test" not in extras and "all" not in extras, config
    # the tests session keeps the full matrix
    assert 'install(session, "all,test,docs")' in (ROOT / "noxfile.py").read_text()


# ---- the hints ---------------------------------------------------------------------------
def test_from_the_clone_the_hint_is_an_editable_install_of_it(monkeypatch, tmp_path):
    assert _install.origin() == ("clone", str(ROOT))
    monkeypatch.chdir(ROOT)
    assert _install.command("torch") == "pip install -e '.[torch]'"
    monkeypatch.chdir(tmp_path)
    assert _install.command("keras,jax") == f"pip install -e '{ROOT}[keras,jax]'"
    assert _install.hint("Install it with: pip install 'unifparam[flax]' (or conda)") == \
        f"Install it with: pip install -e '{ROOT}[flax]' (or conda)"


def test_pip_accepts_the_hint_given_in_the_clone():
    hint = shlex.split(_install.command("torch"))  # pip install -e <clone>[torch]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dry = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install",
                          "--dry-run", "--no-deps", "--no-index", "--no-build-isolation",
                          *hint[2:]], capture_output=True, text=True, env=env, timeout=600)
    assert dry.returncode == 0 and "Would install unifparam-0.1.0" in dry.stdout, dry.stderr


def test_a_folder_of_another_project_is_not_a_clone(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "unifparam-extras"\n')
    (tmp_path / "unifparam").mkdir()
    assert _install.clone_root(tmp_path / "unifparam") is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "unifparam"\n')
    assert _install.clone_root(tmp_path / "unifparam") == tmp_path.resolve()


def test_the_wheel_file_is_read_from_pips_record():
    wheel = {"url": "file:///tmp/my%20dist/unifparam-0.1.0-py3-none-any.whl",
             "archive_info": {"hash": "sha256=00"}}
    assert _install.wheel_file(json.dumps(wheel)) == "/tmp/my dist/unifparam-0.1.0-py3-none-any.whl"
    for other in ({"url": "file:///src/unifparam", "dir_info": {"editable": True}},
                  {"url": "https://example.org/u.whl", "archive_info": {}}):
        assert _install.wheel_file(json.dumps(other)) is None
    assert _install.wheel_file(None) is None and _install.wheel_file("not json") is None


def test_installed_from_a_wheel_the_hint_names_that_wheel_and_pip_accepts_it(tmp_path):
    """Builds this clone's wheel, installs it in a folder of its own and asks it for a hint."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("unifparam", "backends"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, env=env, timeout=600,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("unifparam-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, env=env, timeout=600,
                   capture_output=True)
    shutil.rmtree(src)  # no clone left to find
    proc = subprocess.run([sys.executable, "-c", "import unifparam, unifparam._install as i; "
                           "print(unifparam.__file__); print(i.command('torch'))"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**env, "PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr
    where, hint = proc.stdout.splitlines()
    assert where.startswith(str(tmp_path / "site"))
    assert hint == f"pip install '{wheel}[torch]'"
    dry = subprocess.run([*pip, "install", "--dry-run", "--no-deps", "--no-index",
                          *shlex.split(hint)[2:]], capture_output=True, text=True, env=env,
                         timeout=600)
    assert dry.returncode == 0 and "Would install unifparam-0.1.0" in dry.stdout, dry.stderr


@pytest.mark.parametrize("page", sorted((ROOT / "docs" / "tutorials").glob("*.md")),
                         ids=lambda p: p.name)
def test_a_tutorials_run_it_yourself_tip_says_what_its_notebook_needs(page):
    text = page.read_text()
    tip = text.split('!!! tip "Run it yourself"', 1)[1].split("\n\n", 1)[0]
    assert "pip install -e '.[" in tip and "jupyter" in tip
    if "plot_histograms(" in text or "matplotlib" in text.split(tip)[1]:
        assert "matplotlib" in tip and "plot]" in tip
