"""Tutorial pages: run their code on every backend configuration, compare, show outputs once.

A tutorial (``docs/tutorials/*.md``) is Markdown whose ```` ```python ```` blocks are its
cells: jupytext's Markdown format, so ``jupytext --to ipynb`` opens it as a notebook. A
cell runs as in Jupyter: printed text is kept, and the value of a last bare expression is
displayed (PNG for figures, HTML for tables, else its repr). Markers on the line above a
fence (HTML comments, invisible on the site and in the notebook):

- ``<!-- tutorial: per-backend -->`` the outputs legitimately differ per framework (its own
  defaults): they are not compared, and the site shows them in one tab per configuration.
- ``<!-- tutorial: raises -->`` the cell ends in an error; its last line is the output.

Each configuration (``unifparam._cli.configurations("all")``) runs in its own process
(Keras fixes its backend per process), every page in a namespace of its own. All other
cells must give the same output on every configuration, exactly; the site shows it once.

    python docs/_hooks/tutorials.py run keras:jax docs/tutorials/lazy-initialization.md
    python docs/_hooks/tutorials.py check docs/tutorials/*.md

As an MkDocs hook (``hooks:`` in mkdocs.yml) it inserts the outputs under each cell, adds
each page's notebook (``.ipynb``) to the site, and fails a strict build when the
configurations disagree. Results are cached in ``.cache/tutorials`` by a digest of the
page, this file, the library's sources and the frameworks' versions.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import html
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tutorials"
FENCE = re.compile(r"^```python[ \t]*$")
MARKER = re.compile(r"^<!-- tutorial: (per-backend|raises) -->$")
FRAMEWORKS = ("numpy", "torch", "tensorflow", "keras", "jax", "flax", "matplotlib")
log = logging.getLogger("mkdocs.hooks.tutorials")

Output = dict[str, str]  # {"kind": "stdout" | "text" | "html" | "png" | "error", "data": ...}


@dataclass(frozen=True)
class Cell:
    line: int          # line of the opening fence, 0-based
    end: int           # line of the closing fence
    source: str
    marks: frozenset[str]


def cells(text: str) -> list[Cell]:
    """The ```python cells of a page, with the markers on the lines right above them."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"line {i + 1}: a ```python fence is never closed")
        marks, k = set(), i - 1
        while k >= 0 and (m := MARKER.match(lines[k].strip())):
            marks.add(m[1])
            k -= 1
        out.append(Cell(i, end, "\n".join(lines[i + 1:end]) + "\n", frozenset(marks)))
        i = end + 1
    return out


# ---- running one page in this process ---------------------------------------------------
def display(value: Any) -> Output:
    """What Jupyter would show for a cell's value: PNG, else HTML, else the repr."""
    for kind, method in (("png", "_repr_png_"), ("html", "_repr_html_")):
        shown = getattr(value, method, None)
        if callable(shown) and not isinstance(value, type):
            data = shown()
            if data is not None:
                if kind == "png":
                    data = base64.b64encode(data).decode()
                return {"kind": kind, "data": data, "text": repr(value)}
    return {"kind": "text", "data": repr(value)}


def run_cell(source: str, ns: dict[str, Any], name: str) -> list[Output]:
    """Run one cell like Jupyter; printed text and the displayed value, in order."""
    tree = ast.parse(source, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    out: list[Output] = []
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(tree, name, "exec"), ns)
            value = eval(compile(last, name, "eval"), ns) if last is not None else None
    finally:
        if buf.getvalue():
            out.append({"kind": "stdout", "data": buf.getvalue()})
    if value is not None:
        out.append(display(value))
    return out


def run_page(path: Path) -> list[list[Output]]:
    """Every cell of a page in one namespace; a marked cell's error becomes its output."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    results = []
    for n, cell in enumerate(cells(path.read_text())):
        name = f"{path.name}, cell {n + 1} (line {cell.line + 2})"
        try:
            results.append(run_cell(cell.source, ns, name))
        except Exception as e:
            if "raises" not in cell.marks:
                raise
            results.append([{"kind": "error", "data": f"{type(e).__name__}: {e}"}])
        else:
            if "raises" in cell.marks:
                raise AssertionError(f"{name} is marked 'raises' but ran without error")
    return results


# ---- running on every configuration -----------------------------------------------------
def configurations() -> list[str]:
    from unifparam._cli import configurations as all_configurations
    return all_configurations("all")


def digest(paths: list[Path], config: str) -> str:
    from importlib import metadata

    h = hashlib.sha256()
    sources = sorted([*(ROOT / "unifparam").rglob("*.py"), *(ROOT / "backends").rglob("*.py")])
    for f in [*(p.resolve() for p in paths), Path(__file__).resolve(), *sources]:
        h.update(f.relative_to(ROOT).as_posix().encode() + f.read_bytes())
    for dist in FRAMEWORKS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{dist}=={metadata.version(dist)}".encode())
    h.update(f"{config} {sys.version}".encode())
    return h.hexdigest()[:24]


Results = dict[str, list[list[Output]]]  # page file name -> outputs of each cell


def run(paths: list[Path], config: str, cache: bool = True) -> Results:
    """The pages' outputs on one configuration: one fresh process, in an empty directory,
    each page in its own namespace (one process for all pages: frameworks import once)."""
    key = CACHE / f"{config.replace(':', '-')}-{digest(paths, config)}.json"
    if cache and key.exists():
        return json.loads(key.read_text())
    env = {**os.environ, "UNIFPARAM_BACKEND": config, "MPLBACKEND": "Agg",
           "PYTHONHASHSEED": "0"}
    env.pop("KERAS_BACKEND", None)
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run([sys.executable, __file__, "run", config,
                               *(str(p.resolve()) for p in paths)],
                              cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"A tutorial failed on {config}:\n{proc.stderr[-6000:]}")
    result = json.loads(proc.stdout.splitlines()[-1])
    CACHE.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(result))
    return result


def run_all(paths: list[Path], configs: Iterable[str] | None = None, cache: bool = True,
            workers: int = 2) -> dict[str, Results]:
    """``{configuration: {page name: outputs}}`` for every configuration, ``workers`` at once."""
    configs = list(configs or configurations())
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda c: run(paths, c, cache), configs)
        return dict(zip(configs, results))


def of_page(results: dict[str, Results], path: Path) -> dict[str, list[list[Output]]]:
    """One page's outputs by configuration."""
    return {config: by_page[path.name] for config, by_page in results.items()}


def comparable(outputs: list[Output]) -> list[tuple[str, str]]:
    return [(o["kind"], o["data"]) for o in outputs]


def disagreements(path: Path, results: dict[str, list[list[Output]]]) -> list[str]:
    """One line per cell whose outputs differ between configurations (unless per-backend)."""
    found = []
    page = cells(path.read_text())
    first, *others = results
    for config in others:
        if len(results[config]) != len(results[first]):
            found.append(f"{path.name}: {config} ran {len(results[config])} cells, "
                         f"{first} {len(results[first])}")
    for n, cell in enumerate(page):
        if "per-backend" in cell.marks:
            continue
        want = comparable(results[first][n])
        for config in others:
            got = comparable(results[config][n])
            if got != want:
                found.append(f"{path.name}, cell {n + 1} (line {cell.line + 2}): {config} "
                             f"shows {_short(got)}, {first} shows {_short(want)}")
    return found


def _short(outputs: list[tuple[str, str]]) -> str:
    text = " | ".join(f"{k}: {d}" for k, d in outputs)
    return repr(text if len(text) < 300 else text[:300] + "...")


# ---- rendering -------------------------------------------------------------------------
def render_output(o: Output, raw_html: bool = True) -> str:
    """Markdown for one output: raw HTML at top level, fenced text inside tabs."""
    if o["kind"] == "png":
        return f'<img alt="figure" src="data:image/png;base64,{o["data"]}">'
    if not raw_html:
        return "```text\n" + o.get("text", o["data"]).rstrip("\n") + "\n```"
    body = o["data"] if o["kind"] == "html" else \
        "<pre><code>" + html.escape(o["data"].rstrip("\n")) + "</code></pre>"
    return f'<div class="tutorial-output tutorial-{o["kind"]}">{body}</div>'


def render(text: str, results: dict[str, list[list[Output]]]) -> str:
    """The page with each cell's outputs under it; per-backend cells get one tab each."""
    lines = text.splitlines()
    first = next(iter(results))
    inserts: dict[int, str] = {}
    for n, cell in enumerate(cells(text)):
        if "per-backend" in cell.marks:
            tabs = []
            for config, cells_out in results.items():
                body = "\n\n".join(render_output(o, raw_html=False) for o in cells_out[n])
                indented = "\n".join("    " + s if s else s for s in body.splitlines())
                tabs.append(f'=== "{config}"\n\n{indented or "    (no output)"}\n')
            inserts[cell.end] = "\n".join(tabs)
        else:
            shown = "\n\n".join(render_output(o) for o in results[first][n])
            if shown:
                inserts[cell.end] = shown
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in inserts:
            out += ["", inserts[i], ""]
    return "\n".join(out) + "\n"


# ---- MkDocs hook -------------------------------------------------------------------------
def _is_tutorial(src_uri: str) -> bool:
    return src_uri.startswith("tutorials/") and src_uri.endswith(".md")


def on_files(files: Any, config: Any) -> Any:
    """Add each tutorial's notebook (jupytext, no outputs) beside its page."""
    from mkdocs.structure.files import File

    for f in list(files):
        if _is_tutorial(f.src_uri):
            files.append(File.generated(config, f.src_uri[:-3] + ".ipynb",
                                        content=notebook(Path(f.abs_src_path).read_text())))
    return files


def notebook(text: str) -> str:
    """The page as a notebook (.ipynb text): its cells, ``raises`` cells tagged so that
    running the whole notebook goes on past their error (``raises-exception``)."""
    import jupytext
    import nbformat

    nb = jupytext.reads(text, fmt="md")
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"}}
    code = [c for c in nb.cells if c.cell_type == "code"]
    page = cells(text)
    if [c.source.strip() for c in code] != [c.source.strip() for c in page]:
        raise ValueError("jupytext reads other code cells than the ```python blocks")
    for cell, ours in zip(code, page):
        if "raises" in ours.marks:
            cell.metadata["tags"] = ["raises-exception"]
    for n, cell in enumerate(nb.cells):  # nbformat draws random ids: the same page, same file
        cell.id = f"cell-{n}"
    nbformat.validate(nb)
    return nbformat.writes(nb)


_BUILT: dict[str, Results] = {}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if not _is_tutorial(page.file.src_uri):
        return markdown
    path = Path(page.file.abs_src_path)
    if path.name not in next(iter(_BUILT.values()), {}):  # all tutorials at once, once
        _BUILT.clear()
        _BUILT.update(run_all(sorted(path.parent.glob("*.md"))))
    results = of_page(_BUILT, path)
    for problem in disagreements(path, results):
        log.warning("tutorial outputs disagree: %s", problem)
    return render(markdown, results)


# ---- command line ----------------------------------------------------------------------
def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and len(argv) >= 3:
        os.environ["UNIFPARAM_BACKEND"] = argv[1]
        try:
            result = {Path(p).name: run_page(Path(p)) for p in argv[2:]}
        except Exception:
            traceback.print_exc()
            return 1
        print(json.dumps(result))
        return 0
    if argv[:1] == ["check"] and len(argv) > 1:
        pages = [Path(p) for p in argv[1:]]
        results = run_all(pages, cache=False)
        problems = [line for p in pages for line in disagreements(p, of_page(results, p))]
        print("\n".join(problems) or "outputs agree")
        return 1 if problems else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
