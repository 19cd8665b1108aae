"""MkDocs hook: the header shows unifparam's version and, when known, its repository; code
in tables breaks between names, never inside one.

The version is pyproject.toml's; the repository is ``UNIFPARAM_REPO_URL`` if set, else the
clone's ``origin`` remote (https or ssh GitHub-style), else none (no link is invented).
In a table cell, ``<code>net.collect_params()</code>`` gets a ``<wbr>`` after each ``.``,
``(``, ``[``, ``,`` and ``=``; docs/stylesheets/extra.css stops breaks anywhere else.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CELL = re.compile(r"<td\b[^>]*>.*?</td>", re.S)
CODE = re.compile(r"(<code>)([^<]*)(</code>)")
#: after a dot before a name (not in ``...`` or ``0.01``), an opening bracket, a comma, an ``=``
BREAK_AFTER = re.compile(r"(?<!\.)(\.(?=[A-Za-z_])|[(\[,=](?=[^\s)\]]))")


def version() -> str:
    """``version = "..."`` of pyproject.toml's [project] table."""
    found = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return found[1] if found else "dev"


def repository() -> str | None:
    """The repository's web address: UNIFPARAM_REPO_URL, else the origin remote's, else None."""
    url = os.environ.get("UNIFPARAM_REPO_URL", "").strip()
    if not url:
        try:
            url = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        url = re.sub(r"^git@([^:]+):", r"https://\1/", url)
    url = re.sub(r"\.git$", "", url)
    return url if url.startswith("https://") else None


def on_config(config: Any) -> Any:
    config["site_name"] = f"unifparam {version()}"
    repo = repository()
    if repo and not config.get("repo_url"):
        config["repo_url"] = repo
        config["repo_name"] = "/".join(repo.rstrip("/").split("/")[-2:])
    return config


def break_points(html: str) -> str:
    """``html`` with ``<wbr>`` after the punctuation of code spans in table cells."""
    def cell(m: re.Match[str]) -> str:
        return CODE.sub(lambda c: c[1] + BREAK_AFTER.sub(r"\1<wbr>", c[2]) + c[3], m[0])
    return CELL.sub(cell, html)


def on_page_content(html: str, **kwargs: Any) -> str:
    return break_points(html)
