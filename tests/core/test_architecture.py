"""The shape of the code: the layers hold (import-linter, on the `installed_copy` of tests/conftest.py), and no
function grows past 60 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("edgeseg", "core", "loading", "train", "export", "runtime", "evaluate", "benchmarks", "docs")
MAX_FUNCTION_LINES = 60


def lint_imports(installed: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), str(REPO_ROOT / ".importlinter")],
        cwd=installed,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(installed / "site"), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_the_layer_contracts_hold(installed_copy: Path):
    result = lint_imports(installed_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.slow
def test_the_contracts_catch_the_core_reaching_up(installed_copy: Path):
    card = installed_copy / "site" / "edgeseg" / "core" / "card.py"
    original = card.read_text()
    try:
        card.write_text(original + "\n\ndef _reach_up():\n    import edgeseg.train.network  # noqa: F401\n")
        result = lint_imports(installed_copy)
    finally:
        card.write_text(original)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert "edgeseg.core.card -> edgeseg.train.network" in result.stdout


def long_functions(root: Path) -> list[str]:
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1  # from `def` (decorators excluded) to the last line
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert long_functions(REPO_ROOT) == []


def test_the_length_check_sees_a_long_function(tmp_path: Path):
    (tmp_path / "edgeseg").mkdir()
    body = "".join(f"    x{index} = {index}\n" for index in range(MAX_FUNCTION_LINES))
    (tmp_path / "edgeseg" / "long.py").write_text(f"def too_long():\n{body}")
    assert long_functions(tmp_path) == ["edgeseg/long.py:1 too_long (61 lines)"]
