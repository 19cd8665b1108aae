"""Every ```python block of README.md and docs/*.md runs, as written, in page order.

Each page runs in a fresh interpreter, one namespace for the whole page, in an empty
working directory, on the torch backend (``UNIFPARAM_BACKEND=torch``); pages that claim
portability also run on flax and keras:jax. A block that must not run is preceded by the
line ``<!-- docs-test: skip -->`` (see docs/contributing-docs.md); keep those rare.
A failure's traceback names the page and its line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# tutorials run on every configuration, with their outputs compared: tests/test_tutorials.py
PAGES = sorted([ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md")
                                      if "tutorials" not in p.parts)])
#: Pages whose code is backend-neutral: also run on these backends.
PORTABLE = {"README.md": ("flax", "keras:jax"), "docs/index.md": ("flax", "keras:jax"),
            "docs/concepts.md": ("flax", "keras:jax"),
            "docs/blocks.md": ("flax", "flax:nnx", "keras:jax"),
            "docs/precision.md": ("flax", "flax:nnx", "keras:jax")}

DRIVER = """
import json, sys
ns = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    # padding keeps the page's line numbers in tracebacks
    source = "\\n" * (block["line"] - 1) + block["source"]
    exec(compile(source, block["page"], "exec"), ns)
"""


@dataclass(frozen=True)
class Block:
    page: str
    line: int      # first line of code, 1-based
    info: str      # the fence's info string, e.g. "python"
    source: str
    skipped: bool


def blocks(text: str, page: str = "<page>") -> list[Block]:
    """Fenced code blocks of a Markdown text, with the line each starts at."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        previous = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence)
                                      and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: code fence {fence} is never closed")
        out.append(Block(page, i + 2, info, "\n".join(body) + "\n", previous == SKIP))
        i = j + 1
    return out


def python_blocks(path: Path) -> list[Block]:
    page = path.relative_to(ROOT).as_posix()
    return [b for b in blocks(path.read_text(), page) if b.info.split(" ")[:1] == ["python"]]


def cases() -> list:
    out = []
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        if not any(not b.skipped for b in python_blocks(path)):
            continue
        for backend in ("torch", *PORTABLE.get(page, ())):
            out.append(pytest.param(path, backend, id=f"{page}-{backend}"))
    return out


@pytest.mark.parametrize("path, backend", cases())
def test_page_code_runs(path, backend, tmp_path):
    runnable = [b.__dict__ for b in python_blocks(path) if not b.skipped]
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps(runnable))
    env = {**os.environ, "UNIFPARAM_BACKEND": backend}
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(script)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        pytest.fail(f"{path.name} on {backend}:\n{proc.stderr[-6000:]}", pytrace=False)


def test_skip_markers_are_rare_and_attached_to_python_blocks():
    skipped = [b for path in PAGES for b in python_blocks(path) if b.skipped]
    assert len(skipped) <= 3, [f"{b.page}:{b.line}" for b in skipped]
    for path in PAGES:
        text = path.read_text()
        inside = {b.line + k for b in blocks(text) for k in range(b.source.count("\n"))}
        marked = sum(line.strip() == SKIP for n, line in enumerate(text.splitlines(), 1)
                     if n not in inside)
        attached = sum(b.skipped for b in blocks(text))
        assert marked == attached, f"{path.name}: a skip marker is not right above a fence"


def test_fence_parser():
    text = ("intro\n<!-- docs-test: skip -->\n```python\nraise SystemExit\n```\n\n"
            "- item\n\n    ```python\n    x = 1\n      y = 2\n    ```\n````markdown\n```\n````\n")
    found = blocks(text)
    assert [(b.line, b.info, b.skipped) for b in found] == [
        (4, "python", True), (10, "python", False), (14, "markdown", False)]
    assert found[1].source == "x = 1\n  y = 2\n"
    with pytest.raises(ValueError, match="never closed"):
        blocks("```python\nx = 1\n")


def test_every_docs_page_is_in_the_site_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", config, re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages <= listed, sorted(pages - listed)
    assert listed <= pages, sorted(listed - pages)
