"""Griffe extension for the API reference: docstrings written for ``help()`` read as Markdown.

The docstrings are plain text with doctest examples and a little reST. As Markdown a
``>>>`` line is a nested blockquote and an example directly under a sentence joins its
paragraph, so each run of ``>>>`` / ``...`` lines (with the output lines that follow, up to
a blank line) becomes a fenced ``pycon`` block of its own, ``# doctest:`` flags dropped;
a reST literal-block marker ``text::`` reads ``text:``; roles ``:func:`x``` become code.

Loaded by mkdocstrings (``extensions:`` in mkdocs.yml).

    >>> fence_examples("Build it.\\n>>> build(spec)  # doctest: +SKIP\\nModel")
    'Build it.\\n\\n```pycon\\n>>> build(spec)\\nModel\\n```'
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PROMPT = re.compile(r"^[ \t]*>>>( |$)")
FLAGS = re.compile(r"\s*# doctest:.*$")
ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


def fence_examples(text: str) -> str:
    """``text`` with its doctest examples fenced and its reST markers made Markdown."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if not PROMPT.match(lines[i]):
            line = ROLE.sub(r"`\1`", lines[i])
            out.append(line[:-1] if line.endswith("::") and line.strip() != "::" else line)
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(FLAGS.sub("", lines[i][indent:]))
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += ["```pycon", *block, "```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Rewrites each loaded object's docstring with :func:`fence_examples`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_examples(obj.docstring.value)
