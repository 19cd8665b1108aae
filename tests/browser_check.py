"""The built site in a real browser (headless Chromium): every page renders, shows no raw
markup, and nothing overflows sideways at 1280 px; one screenshot per page.

    python tests/browser_check.py site --screenshots site-screenshots   # or: nox -s browser

Without Chromium (Debian: ``apt-get install chromium``) it says so and exits 0. Each page is
loaded from a copy beside it with a small script appended that measures the laid-out page
and writes its findings into the DOM, which ``--dump-dom`` returns; no driver is needed.
Exit status 1 lists each page's problems.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1280
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: Flags for a machine with no network and no display (as root in CI: --no-sandbox).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio"]

#: Runs in the page once it is laid out; its findings go into <pre id="browser-check">.
PROBE = r"""
<script>
window.addEventListener("load", () => {
  const problems = [];
  const article = document.querySelector("article.md-content__inner") ||
                  document.querySelector("article");
  if (!article || !document.querySelector("h1")) problems.push("no article or title");
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + 1)
    problems.push(`page is ${root.scrollWidth}px wide in a ${window.innerWidth}px window`);
  document.querySelectorAll("article table").forEach((t, i) => {
    const frame = t.closest(".md-typeset__scrollwrap") || t;
    if (t.scrollWidth > frame.clientWidth + 1 || t.getBoundingClientRect().right >
        article.getBoundingClientRect().right + 1)
      problems.push(`table ${i + 1} (${t.rows[0].innerText.slice(0, 40).trim()}) needs ` +
                    `${t.scrollWidth}px, has ${frame.clientWidth}px`);
  });
  const cellCode = document.querySelector("article td code");
  if (cellCode) {
    const style = getComputedStyle(cellCode);
    if (style.wordBreak !== "normal" || !["normal", ""].includes(style.overflowWrap))
      problems.push(`code in tables may break inside a name (word-break: ${style.wordBreak}, ` +
                    `overflow-wrap: ${style.overflowWrap})`);
  }
  document.querySelectorAll("article pre > code").forEach((c, i) => {
    if (c.scrollWidth > c.clientWidth + 1)
      problems.push(`code block ${i + 1} is cut: ${c.innerText.split("\n")[0].slice(0, 60)}`);
  });
  if (document.querySelector("article blockquote blockquote"))
    problems.push("nested blockquotes (a >>> example rendered as Markdown quotes?)");
  const text = article ? article.cloneNode(true) : null;
  if (text) {
    text.querySelectorAll("pre, code, script, style").forEach(e => e.remove());
    const raw = text.innerText;
    for (const [mark, why] of [[/```/, "a code fence"], [/^:::/m, "a mkdocstrings directive"],
                               [/\]\[[\w.]+\]/, "an unresolved reference link"],
                               [/(^|\s)\*\*\w[^*\n]*\w\*\*(\s|$)/, "bold markers"],
                               [/``\w/, "reST double backticks"], [/^!!! /m, "an admonition"],
                               [/:(func|class|meth|mod|attr):`/, "a reST role"],
                               [/^>>> /m, "a doctest outside a code block"]]) {
      const at = raw.search(mark);
      if (at >= 0)
        problems.push(`raw markup (${why}): ...${raw.slice(Math.max(0, at - 30), at + 30)}...`);
    }
  }
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({problems, height: root.scrollHeight});
  document.body.appendChild(out);
});
</script>
"""


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def pages(site: Path) -> list[Path]:
    """Every page of the site (not the 404 page nor search and asset folders)."""
    return sorted(p for p in site.rglob("index.html")
                  if not {"assets", "search"} & set(p.relative_to(site).parts))


def run_browser(browser: str, profile: str, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc.stdout


def check_page(browser: str, profile: str, page: Path) -> tuple[list[str], int]:
    """The page's problems, and its height in px, measured at WIDTH px."""
    probe = page.with_name("index.browser-check.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                     encoding="utf-8")
    try:
        dom = run_browser(browser, profile, f"--window-size={WIDTH},900",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    if not found:
        return ["the page did not finish loading (no probe result)"], 900
    result = json.loads(html.unescape(found[1]))
    return result["problems"], int(result["height"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, nargs="?", default=Path("site"),
                        help="the built site (mkdocs build), default site/")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="folder for one PNG per page (kept as CI artifacts)")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("browser check skipped: no Chromium found (apt-get install chromium)")
        return 0
    args.site = args.site.resolve()
    found = pages(args.site)
    if not found:
        print(f"browser check: no pages under {args.site}; build the site first")
        return 1
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tempfile.TemporaryDirectory() as profile:
        for page in found:
            folder = page.parent.relative_to(args.site)
            name = "index" if folder == Path(".") else folder.as_posix()
            problems, height = check_page(browser, profile, page)
            if args.screenshots:
                shot = args.screenshots / f"{name.replace('/', '--')}.png"
                run_browser(browser, profile, f"--window-size={WIDTH},{min(height, 16000)}",
                            f"--screenshot={shot}", page.as_uri())
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {name}")
            for problem in problems:
                print(f"     {problem}")
    print(f"browser check: {len(found) - failed} passed, {failed} failed "
          f"({len(found)} pages at {WIDTH}px)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
