"""The checks a typed library keeps, run with the suite (so CI runs them too):
lint (ruff), types (mypy, strict config in pyproject.toml), the documentation site
(mkdocs --strict: a broken reference or any warning fails) and the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.skip(f"{name} not installed: pip install -e '.[test]'")
    return path


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_ruff_is_clean():
    proc = _run([_tool("ruff"), "check", "topiq_loss", "tests", "examples", "benchmarks"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_mypy_strict_is_clean():
    proc = _run([_tool("mypy")], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_docs_build_strictly(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs need mkdocs-material and mkdocstrings[python]")
    proc = _run([_tool("mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_package_ships_its_type_marker():
    assert (ROOT / "topiq_loss" / "py.typed").is_file()


MODULES = [
    "topiq_loss.models.cfanet_fr",
    "topiq_loss.models.cfanet_nr",
    "topiq_loss.losses.fr",
    "topiq_loss.losses.nr",
    "topiq_loss.training.restoration",
    "topiq_loss.training.gan",
    "topiq_loss.functional.robust",
    "topiq_loss.weights.hub",
]


def test_docstring_examples():
    """Examples that need no download run; the others are marked +SKIP in the docstring."""
    attempted = 0
    for name in MODULES:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
        assert result.failed == 0, name
        attempted += result.attempted
    assert attempted >= 8  # the network, robust-mode and redaction examples really ran
