"""The layering of README "Layout", as import-linter enforces it (`lint-imports`, run by `make test`).

The contracts live in pyproject.toml. These tests run the real tool on the real tree, and on copies of it
with one deliberate violation each, so a contract that silently stopped checking would fail here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "config",
    "dashboard",
    "exports",
    "evaluation_report",
    "loop",
    "annotation",
    "jobs",
    "learning",
    "models_zoo",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The Python packages and pyproject.toml, copied: violations are planted in the copy only."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("learning/index.py", "import django", "The ML engine never imports Django"),
        (
            "models_zoo/heads.py",
            "from rest_framework import serializers",
            "The ML engine never imports Django",
        ),
        ("jobs/services.py", "from annotation import models", "Layers"),
        ("annotation/labels.py", "from loop import state", "Layers"),
        ("dashboard/stats.py", "from exports import rows", "Layers"),
        ("annotation/labels.py", "from annotation import selectors", "No import cycles"),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tree_copy: Path, module: str, line: str, broken: str
) -> None:
    path = tree_copy / module
    path.write_text(path.read_text() + f"\n{line}  # planted by tests/test_architecture.py\n")
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    broken_section = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in broken_section, result.stdout
