"""MkDocs hooks: the README is the site's home page and CHANGELOG.md a page of the site.

Both live at the repository root, where GitHub shows them, so their links are relative to
the root (``docs/cli.md``). The hook copies them into the site and rewrites those links to
the site's pages. A link to a repository file outside ``docs/`` (``examples/invoicing/``)
becomes its path in code, as the site does not hold it; a link to a file that does not
exist stays as written so that MkDocs' strict link check fails on it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Root files published as pages, and their name in the site.
ROOT_PAGES = {"README.md": "index.md", "CHANGELOG.md": "changelog.md"}
# A Markdown link or image: [text](target) with no space in the target.
LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
# The test suite's settings on a fence (```python test="skip" reason="...", read by
# tests/test_docs.py): SuperFences would not take the block as code with them.
FENCE_SETTINGS = re.compile(r'^([ \t]*(?:```|~~~)[\w+-]*)[ \t]+test="[^"]*".*$', re.MULTILINE)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README and CHANGELOG.md as generated pages."""
    for name, uri in ROOT_PAGES.items():
        content = (ROOT / name).read_text(encoding="utf-8")
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Point links at the site's pages; name the repository files the site does not hold;
    drop the test suite's settings from fences."""
    # Links are relative to where the page's source lives: the root for README.md.
    base = ROOT if page.file.src_uri in ROOT_PAGES.values() else (DOCS / page.file.src_uri).parent

    def rewrite(match: re.Match[str]) -> str:
        bang, text, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:|#|/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (base / path).resolve()
        if not resolved.exists():
            return match.group(0)
        if resolved.is_relative_to(DOCS):
            site_path = PurePosixPath(resolved.relative_to(DOCS).as_posix())
        elif resolved.name in ROOT_PAGES and resolved.parent == ROOT:
            site_path = PurePosixPath(ROOT_PAGES[resolved.name])
        else:
            return _repository_file(text, resolved)
        relative = _relative(site_path, PurePosixPath(page.file.src_uri).parent)
        return f"{bang}[{text}]({relative}{'#' + anchor if anchor else ''})"

    markdown = FENCE_SETTINGS.sub(r"\1", markdown)
    return _outside_fences(markdown, lambda text: LINK.sub(rewrite, text))


def _relative(target: PurePosixPath, start: PurePosixPath) -> str:
    """``target`` relative to the directory ``start``, both relative to the docs root."""
    return posixpath.relpath(target.as_posix(), start.as_posix() or ".")


def _repository_file(text: str, path: Path) -> str:
    """The link's text with the repository path it named, in code."""
    name = path.relative_to(ROOT).as_posix() + ("/" if path.is_dir() else "")
    return f"`{name}`" if text.strip("`") == name else f"{text} (`{name}`)"


def _outside_fences(markdown: str, change: Callable[[str], str]) -> str:
    """Apply ``change`` to the text between fenced code blocks, leaving the blocks alone."""
    parts: list[str] = []
    last = 0
    for fence in FENCE.finditer(markdown):
        parts += [change(markdown[last : fence.start()]), fence.group(0)]
        last = fence.end()
    return "".join([*parts, change(markdown[last:])])
