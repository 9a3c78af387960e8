"""What a user installs: the built sdist and wheel carry the package data, install into a fresh
venv, and the version they declare is ``eskit.__version__``, the one place it lives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import eskit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "eskit"
# Left out of the copy that is built: local state, caches and earlier builds.
NOT_SOURCE = (
    ".git",
    ".venv",
    ".artifacts",
    ".hypothesis",
    "build",
    "site",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "*.db*",
    "node_modules",  # the Node.js client of tests/kurrentdb (npm ci), not eskit's source
)


def test_the_version_lives_in_eskit_and_pyproject_reads_it_from_there() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "eskit.__version__"}
    assert isinstance(eskit.__version__, str)
    assert eskit.__version__.count(".") == 2


def package_data() -> set[str]:
    """The files beside the code that eskit reads at run time, relative to src/."""
    files = [
        *PACKAGE.glob("store/*_migrations/*.sql"),
        *PACKAGE.glob("web/admin/templates/*"),
        *PACKAGE.glob("web/admin/static/*"),
        PACKAGE / "py.typed",
    ]
    return {str(path.relative_to(ROOT / "src")) for path in files if path.is_file()}


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, source)
    version = eskit.__version__
    sdist = dist / f"eskit-{version}.tar.gz"
    wheel = dist / f"eskit-{version}-py3-none-any.whl"

    expected = package_data()
    assert any(name.endswith(".sql") for name in expected)
    assert any("/templates/" in name for name in expected)
    with tarfile.open(sdist) as archive:
        in_sdist = {name.removeprefix(f"eskit-{version}/src/") for name in archive.getnames()}
    assert expected <= in_sdist, expected - in_sdist
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert expected <= in_wheel, expected - in_wheel

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)

    assert "Usage: eskit" in run(venv / "bin" / "eskit", "--help")
    assert run(python, "-c", "import eskit; print(eskit.__version__)").strip() == version
    installed = "import importlib.metadata as m; print(m.version('eskit'))"
    assert run(python, "-c", installed).strip() == version
    # The installed package finds its SQL migrations: a SQLite store opens, appends, reads.
    roundtrip = (
        "import eskit, eskit.sync, sys\n"
        "with eskit.sync.open_store(f'sqlite:///{sys.argv[1]}') as store:\n"
        "    store.append('smoke-1', [eskit.NewEvent('Smoked', {'n': 1})])\n"
        "    print([e.type for e in store.read_stream('smoke-1')])\n"
    )
    events = tmp_path / "events.db"
    assert run(python, "-c", roundtrip, events, cwd=tmp_path).strip() == "['Smoked']"
