"""The tutorials (docs/tutorials/*.md) run on every backend configuration and agree.

Each page runs once per configuration (``unifparam._cli.configurations("all")``), each in
its own process; every cell's output (printed text, displayed value, figure bytes, error
message of a cell marked ``raises``) must be the same on every configuration, exactly,
except in cells marked ``per-backend`` (the frameworks' own defaults). The runner is
docs/_hooks/tutorials.py, the same code that puts the outputs on the site.

Runs are cached in .cache/tutorials under a digest of the page, the runner, every source
file of unifparam and the adapters, the frameworks' versions and the configuration: in the
tests session the docs build has just run them, so this reuses those runs. Set
UNIFPARAM_TUTORIALS_FRESH=1 to run them again regardless.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs" / "tutorials").glob("*.md"))


def _runner():
    spec = importlib.util.spec_from_file_location("tutorials_hook",
                                                  ROOT / "docs" / "_hooks" / "tutorials.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


tutorials = _runner()


@pytest.fixture(scope="module")
def configs():
    found = tutorials.configurations()
    assert {"torch", "keras:tensorflow", "keras:jax", "keras:torch"} <= set(found), found
    assert any(c.startswith("flax") for c in found), found
    return found


def test_the_builders_guide_is_there_and_in_the_nav():
    assert [p.name for p in PAGES] == [
        "custom-layers.md", "file-io.md", "gpus.md", "layers-and-modules.md",
        "lazy-initialization.md", "parameter-initialization.md", "parameter-management.md"]
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"tutorials/{p.name}" in nav for p in PAGES)


def test_no_tutorial_names_a_framework_in_its_code():
    framework = re.compile(r"^\s*(import|from)\s+(torch|keras|jax|flax|mxnet|tensorflow)\b",
                           re.MULTILINE)
    for page in PAGES:
        for cell in tutorials.cells(page.read_text()):
            assert not framework.search(cell.source), (page.name, cell.line)


@pytest.fixture(scope="module")
def results(configs):
    fresh = os.environ.get("UNIFPARAM_TUTORIALS_FRESH") == "1"
    return tutorials.run_all(PAGES, configs, cache=not fresh)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs_and_agrees_on_every_configuration(page, configs, results):
    by_config = tutorials.of_page(results, page)
    assert list(by_config) == configs
    n_cells = len(tutorials.cells(page.read_text()))
    for config, outputs in by_config.items():
        assert len(outputs) == n_cells, config
    assert tutorials.disagreements(page, by_config) == []
    # the comparison is not vacuous: most cells show something
    shown = sum(bool(out) for out in by_config[configs[0]])
    assert shown >= n_cells * 2 // 3, shown


def test_only_the_frameworks_defaults_are_per_backend():
    per_backend = [(p.name, c.line) for p in PAGES for c in tutorials.cells(p.read_text())
                   if "per-backend" in c.marks]
    assert len(per_backend) == 1, per_backend
    page, line = per_backend[0]
    assert page == "parameter-management.md"
    text = (ROOT / "docs" / "tutorials" / page).read_text().splitlines()
    assert "nn.Dense" in text[line + 1] and "initialize" not in "\n".join(text[line:line + 6])


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_opens_as_a_notebook(page):
    pytest.importorskip("jupytext")
    nb = json.loads(tutorials.notebook(page.read_text()))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    ours = tutorials.cells(page.read_text())
    assert ["".join(c["source"]).strip() for c in code] == [c.source.strip() for c in ours]
    assert [c["metadata"].get("tags") for c in code] == [
        ["raises-exception"] if "raises" in c.marks else None for c in ours]
    assert "os.environ.setdefault(\"UNIFPARAM_BACKEND\"" in "".join(code[0]["source"])


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_notebook_runs_in_a_jupyter_kernel(page, monkeypatch):
    """The page's notebook, executed cell by cell in a real IPython kernel (torch): no cell
    fails but those tagged ``raises-exception``; models and summaries display as HTML
    tables, histograms as images."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("torch")
    monkeypatch.setenv("UNIFPARAM_BACKEND", "torch")
    nb = nbformat.reads(tutorials.notebook(page.read_text()), as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    shown = [set(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
             for o in c.outputs]
    errors = [c for c in nb.cells if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.outputs)]
    assert all("raises-exception" in c.metadata.get("tags", []) for c in errors)
    # the two chapters show models and summaries throughout; the other pages where they
    # print a summary (File I/O, GPUs and others show arrays and devices)
    wanted = 3 if page.stem in ("parameter-management", "lazy-initialization") else \
        page.read_text().count("up.summary(")
    assert sum("text/html" in kinds for kinds in shown) >= wanted
    if "histogram" in page.read_text():
        assert any("image/png" in kinds for kinds in shown)


# ---- the runner itself --------------------------------------------------------------------
PAGE = """# T

```python
x = 1
print("hi")
x + 1
```

<!-- tutorial: per-backend -->
```python
print(x)
```

<!-- tutorial: raises -->
```python
1 / 0
```

```text
not a cell
```
"""


def test_cells_and_markers():
    found = tutorials.cells(PAGE)
    assert [c.marks for c in found] == [frozenset(), {"per-backend"}, {"raises"}]
    assert found[0].source == 'x = 1\nprint("hi")\nx + 1\n'
    with pytest.raises(ValueError, match="never closed"):
        tutorials.cells("```python\nx = 1\n")


def test_run_page_like_jupyter(tmp_path):
    page = tmp_path / "t.md"
    page.write_text(PAGE)
    assert tutorials.run_page(page) == [
        [{"kind": "stdout", "data": "hi\n"}, {"kind": "text", "data": "2"}],
        [{"kind": "stdout", "data": "1\n"}],
        [{"kind": "error", "data": "ZeroDivisionError: division by zero"}]]
    page.write_text("```python\nx = 1;\n```\n<!-- tutorial: raises -->\n```python\nx\n```\n")
    with pytest.raises(AssertionError, match="marked 'raises'"):
        tutorials.run_page(page)
    page.write_text("```python\n1 / 0\n```\n")
    with pytest.raises(ZeroDivisionError):
        tutorials.run_page(page)


def test_disagreements_are_reported_except_per_backend(tmp_path):
    page = tmp_path / "t.md"
    page.write_text(PAGE)
    same = [[{"kind": "text", "data": "2"}], [], []]
    other = [[{"kind": "text", "data": "3"}], [{"kind": "stdout", "data": "x"}], []]
    assert tutorials.disagreements(page, {"a": same, "b": same}) == []
    found = tutorials.disagreements(page, {"a": same, "b": other})
    assert len(found) == 1 and "cell 1" in found[0] and "b shows" in found[0], found


def test_render_shows_outputs_once_and_tabs_per_backend():
    results = {"torch": [[{"kind": "stdout", "data": "hi <b>\n"}],
                         [{"kind": "stdout", "data": "t\n"}], []],
               "flax": [[{"kind": "stdout", "data": "hi <b>\n"}],
                        [{"kind": "stdout", "data": "f\n"}], []]}
    out = tutorials.render(PAGE, results)
    assert out.count("hi &lt;b&gt;") == 1
    assert '=== "torch"\n\n    ```text\n    t\n    ```' in out
    assert '=== "flax"\n\n    ```text\n    f\n    ```' in out
    assert out.index("hi &lt;b&gt;") < out.index('=== "torch"') < out.index("1 / 0")
