"""The documentation site's machinery (docs/_hooks): API examples as code blocks, notebook
files identical across builds, table code breaking between names, the header's version.
The built site itself is checked in a browser by tests/browser_check.py (nox -s browser)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "_hooks"


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"hook_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_doctest_examples_become_fenced_blocks_of_their_own():
    fence = _hook("griffe_doctests").fence_examples
    text = ("Set values.\n>>> w = net[0].weight\n>>> w[0, 0] = 42\n>>> w.numpy()[0, 0]\n42.0\n"
            "\n>>> up.tie(net, 'a', 'b')   # doctest: +SKIP\nDone.")
    assert fence(text) == ("Set values.\n\n```pycon\n>>> w = net[0].weight\n>>> w[0, 0] = 42\n"
                           ">>> w.numpy()[0, 0]\n42.0\n```\n\n"
                           "```pycon\n>>> up.tie(net, 'a', 'b')\nDone.\n```")


def test_examples_under_a_sentence_and_in_literal_blocks_are_not_blockquotes():
    fence = _hook("griffe_doctests").fence_examples
    out = fence("Selects it before import::\n\n    >>> build(spec, backend='keras:jax')\n\n"
                "See :func:`initialize` and :class:`Model`.")
    assert out == ("Selects it before import:\n\n```pycon\n>>> build(spec, backend='keras:jax')"
                   "\n```\n\nSee `initialize` and `Model`.")
    assert "\n>>>" not in "\n" + re.sub(r"```pycon.*?```", "", out, flags=re.S)


def test_the_extension_is_configured_and_rewrites_a_real_docstring():
    griffe = pytest.importorskip("griffe")
    config = (ROOT / "mkdocs.yml").read_text()
    assert "docs/_hooks/griffe_doctests.py:DoctestBlocks" in config
    assert "line_length:" in config and "separate_signature: true" in config
    ext = _hook("griffe_doctests").DoctestBlocks()
    loader = griffe.GriffeLoader(extensions=griffe.load_extensions(ext),
                                 search_paths=[str(ROOT)])
    verbs = loader.load("unifparam._verbs")
    doc = verbs["build"].docstring.value
    assert "```pycon\n>>> net = build(" in doc and "\n\n```pycon" in doc


def test_notebooks_are_the_same_file_on_every_build():
    pytest.importorskip("jupytext")
    tutorials = _hook("tutorials")
    page = (ROOT / "docs" / "tutorials" / "lazy-initialization.md").read_text()
    first, second = tutorials.notebook(page), tutorials.notebook(page)
    assert first == second
    ids = [c["id"] for c in json.loads(first)["cells"]]
    assert len(set(ids)) == len(ids) and ids[0] == "cell-0"


def test_code_in_table_cells_breaks_only_between_names():
    look = _hook("site_look")
    html = ("<table><tr><td><code>net.collect_params()</code>, <code>init.Normal(std=0.01)"
            "</code> <code>set_weights(...)</code></td></tr></table><p><code>a.b</code></p>")
    out = look.break_points(html)
    assert "<code>net.<wbr>collect_params()</code>" in out
    assert "init.<wbr>Normal(<wbr>std=<wbr>0.01)" in out  # not inside the number
    assert "set_weights(<wbr>...)" in out and "<p><code>a.b</code></p>" in out
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    assert re.search(r"table:not\(\[class\]\) code \{\s*word-break: normal;", css)
    assert "stylesheets/extra.css" in (ROOT / "mkdocs.yml").read_text()


def test_the_header_names_the_version_and_no_invented_repository(monkeypatch):
    look = _hook("site_look")
    config = {"site_name": "unifparam", "repo_url": None}
    monkeypatch.setenv("UNIFPARAM_REPO_URL", "")
    monkeypatch.setattr(look, "ROOT", Path("/nonexistent"))  # no git remote there
    monkeypatch.setattr(look, "version", lambda: "0.1.0")
    assert look.on_config(dict(config))["site_name"] == "unifparam 0.1.0"
    monkeypatch.setenv("UNIFPARAM_REPO_URL", "https://example.org/team/unifparam.git")
    got = look.on_config(dict(config))
    assert got["repo_url"] == "https://example.org/team/unifparam"
    assert got["repo_name"] == "team/unifparam"
