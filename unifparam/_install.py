"""Install commands that work from where this unifparam came from: a clone, a wheel file, an index.

unifparam has no release on a package index yet, so ``pip install 'unifparam[torch]'``
works only once it has. Every install hint the library prints goes through :func:`command`:

- imported from a clone (the package sits next to the project's ``pyproject.toml``, which
  is also the case for an editable install): ``pip install -e '.[torch]'``, with the clone's
  path instead of ``.`` when the current directory is elsewhere;
- installed from a wheel file (pip records where from, PEP 610 ``direct_url.json``):
  ``pip install '/path/to/unifparam-0.1.0-py3-none-any.whl[torch]'``;
- otherwise (a package index): ``pip install 'unifparam[torch]'``.

    >>> command("torch")                        # doctest: +SKIP
    "pip install -e '.[torch]'"
    >>> hint("Install it with: pip install 'unifparam[flax]'")   # doctest: +SKIP
    "Install it with: pip install -e '.[flax]'"
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

#: ``pip install 'unifparam[extras]'`` as written in messages and backend infos.
EXTRAS = re.compile(r"pip install 'unifparam\[([A-Za-z0-9_,-]+)\]'")


def clone_root(package_dir: str | os.PathLike[str]) -> Path | None:
    """The clone holding ``package_dir`` (its parent has unifparam's pyproject.toml), or None."""
    root = Path(package_dir).resolve().parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"unifparam"', text, re.M) else None


def wheel_file(direct_url: str | None) -> str | None:
    """The wheel file pip installed from, read from PEP 610's ``direct_url.json`` text."""
    if not direct_url:
        return None
    try:
        info = json.loads(direct_url)
    except ValueError:
        return None
    url = urlparse(info.get("url", "")) if isinstance(info, dict) else None
    if url is None or url.scheme != "file" or "archive_info" not in info:
        return None
    path = unquote(url.path)
    return path if path.endswith(".whl") else None


@cache
def origin() -> tuple[str, str]:
    """Where this unifparam comes from: ("clone", root), ("wheel", file) or ("index", "")."""
    root = clone_root(Path(__file__).parent)
    if root is not None:
        return "clone", str(root)
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        found = wheel_file(distribution("unifparam").read_text("direct_url.json"))
    except PackageNotFoundError:
        found = None
    return ("wheel", found) if found else ("index", "")


def command(extras: str) -> str:
    """The pip command that installs unifparam's ``extras`` (``"torch"``, ``"keras,jax"``)."""
    kind, where = origin()
    if kind == "clone":
        here = "." if Path.cwd().resolve() == Path(where) else where
        return f"pip install -e '{here}[{extras}]'"
    if kind == "wheel":
        return f"pip install '{where}[{extras}]'"
    return f"pip install 'unifparam[{extras}]'"


def hint(text: str) -> str:
    """``text`` with each ``pip install 'unifparam[...]'`` replaced by :func:`command`."""
    return EXTRAS.sub(lambda m: command(m[1]), text)
