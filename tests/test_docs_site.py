"""The documentation site (``make docs``): it builds in strict mode, holds a page for every
public module, and a broken link, anchor or docstring cross-reference fails the build.

Each test builds a copy of the sources into a temporary directory, so nothing is written to
the repository and a test can break its copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the site is built from (mkdocs.yml names them), and the folders the pages link to.
SOURCES = ("mkdocs.yml", "README.md", "CHANGELOG.md", "docs", "tools", "src", "examples", "tests")
PUBLIC_MODULES = ("eskit", "sync", "application", "projections", "migration", "testing")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the site is built from."""
    copy = tmp_path / "project"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.db*")
            )
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def build(project: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``project`` into its ``site/``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(project / "src")}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(project / "site")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_site_builds_strictly_with_the_how_to_pages_and_the_api_reference(
    project: Path,
) -> None:
    result = build(project)
    assert result.returncode == 0, result.stderr
    site = project / "site"
    for page in (ROOT / "docs").glob("*.md"):
        assert (site / page.stem / "index.html").is_file(), page.name
    home = (site / "index.html").read_text()
    assert "Install" in home  # the README is the home page
    assert 'href="event-store/#what-the-store-accepts"' in home  # its docs/ links, rewritten
    assert (site / "changelog" / "index.html").is_file()
    for module in PUBLIC_MODULES:
        reference = (site / "reference" / module / "index.html").read_text()
        name = "eskit" if module == "eskit" else f"eskit.{module}"
        assert f'id="{name}"' in reference, module
    sync = (site / "reference" / "sync" / "index.html").read_text()
    assert 'id="eskit.sync.SyncStore"' in sync


def test_a_broken_link_or_anchor_fails_the_build(project: Path) -> None:
    with (project / "docs" / "admin.md").open("a") as page:
        page.write("\nSee [the CLI](cli.md#no-such-section) and [a page](no-such-page.md).\n")
    result = build(project)
    assert result.returncode != 0
    assert "does not contain an anchor '#no-such-section'" in result.stderr
    assert "'no-such-page.md'" in result.stderr


def test_a_broken_link_in_the_readme_fails_the_build(project: Path) -> None:
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nSee [gone](docs/gone.md) and [x](examples/gone/).\n")
    result = build(project)
    assert result.returncode != 0
    assert "'docs/gone.md'" in result.stderr
    assert "'examples/gone/'" in result.stderr


def test_a_broken_cross_reference_in_a_docstring_fails_the_build(project: Path) -> None:
    module = project / "src" / "eskit" / "sync.py"
    source = module.read_text()
    module.write_text(source.replace('"""', '"""See [the store][eskit.sync.NoSuchThing]. ', 1))
    result = build(project)
    assert result.returncode != 0
    assert "Could not find cross-reference target 'eskit.sync.NoSuchThing'" in result.stderr
