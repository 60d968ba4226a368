"""The code's habits, checked on every test run: ruff's lint and format, mypy's types, and each suppression earned.

The tools come with the dev extra ([tool.ruff] and [tool.mypy] in pyproject.toml hold their settings). mypy reads
the `installed_copy` of tests/conftest.py: the editable install's folder mapping (core/ is edgeseg.core) hides the
parts from it. `make lint` runs the same checks.

A suppression names what it silences and says why, in one spelling each:
``# noqa: E501 - the example is one shell line`` and ``# type: ignore[assignment]  # the stub is wrong``.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# A suppression names what it silences and says why (the module docstring shows both spellings).
SUPPRESSION = re.compile(r"#\s*(?:ruff:\s*)?noqa\b|#\s*type:\s*ignore\b", re.IGNORECASE)
EARNED = re.compile(
    r"#\s*(?:ruff:\s*)?noqa: [A-Z]+[0-9]+(?:, [A-Z]+[0-9]+)* - \w"  # codes, then " - " and the reason
    r"|#\s*type: ignore\[[a-z-]+(?:, [a-z-]+)*\]\s+#\s*\w"  # error codes, then a comment with the reason
)


def tool(name: str) -> Path:
    """A dev tool installed beside this interpreter."""
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{path} is missing: install the dev extra (pip install -e '.[dev]')"
    return path


def run(command: list[str | Path], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(word) for word in command], cwd=cwd, capture_output=True, text=True)


def test_ruff_finds_nothing():
    result = run([tool("ruff"), "check", "--no-cache", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tree_is_formatted_as_ruff_formats_it():
    result = run([tool("ruff"), "format", "--check", "--no-cache", "."])
    assert result.returncode == 0, "run `ruff format` on these files:\n" + result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_finds_nothing_in_an_installed_copy(installed_copy: Path, tmp_path: Path):
    config = REPO_ROOT / "pyproject.toml"
    command = [tool("mypy"), "--config-file", config, "--python-executable", sys.executable, "-p", "edgeseg"]
    result = run([*command, "--cache-dir", tmp_path / "mypy-cache"], cwd=installed_copy / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def unearned_suppressions(paths: list[Path], root: Path) -> list[str]:
    """Every `# noqa` or `# type: ignore` comment in ``paths`` that names no code or gives no reason."""
    found = []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type != tokenize.COMMENT:
                continue
            for match in SUPPRESSION.finditer(token.string):
                if not EARNED.match(token.string, match.start()):
                    found.append(f"{path.relative_to(root)}:{token.start[0]}: {token.string}")
    return found


def python_files_ruff_checks() -> list[Path]:
    result = run([tool("ruff"), "check", "--no-cache", "--show-files", "."])
    assert result.returncode == 0, result.stderr
    return [Path(line) for line in result.stdout.splitlines() if line.endswith(".py")]


def test_every_suppression_names_its_code_and_gives_a_reason():
    files = python_files_ruff_checks()
    assert REPO_ROOT / "core" / "card.py" in files and REPO_ROOT / "tests" / "conftest.py" in files
    assert unearned_suppressions(files, REPO_ROOT) == []


def test_the_suppression_check_sees_bare_and_unexplained_ones(tmp_path: Path):
    lines = [
        "import os  # noqa: F401 - re-exported for callers",
        "x: int = 'a'  # type: ignore[assignment]  # the stub is wrong here",
        "text = '# noqa in a string is no comment'",
        "import sys  # noqa",
        "import re  # noqa: F401",
        "import io  # NOQA: F401 - shouted",
        "y: int = 'b'  # type: ignore",
        "z: int = 'c'  # type: ignore[assignment]",
        "# ruff: noqa",
    ]
    path = tmp_path / "sample.py"
    path.write_text("\n".join(lines) + "\n")
    found = unearned_suppressions([path], tmp_path)
    assert [line.split(":")[1] for line in found] == ["4", "5", "6", "7", "8", "9"]


# The first commit made under CONTRIBUTING.md's rule (a one-line subject of at most 72 characters, details in
# the body); the commits before it are history and keep their long subjects.
FIRST_COMMIT_UNDER_THE_RULE = "fcc23b5"
MAX_SUBJECT = 72


def commit_subjects(since: str) -> list[str] | None:
    """Subjects of ``since`` and every commit after it; None where the history does not hold it (a shallow clone)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    known = subprocess.run(["git", "cat-file", "-e", f"{since}^{{commit}}"], cwd=REPO_ROOT, capture_output=True)
    if known.returncode != 0:
        return None
    log = subprocess.run(
        ["git", "log", "--format=%s", f"{since}^..HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return log.stdout.splitlines()


def test_commit_subjects_are_one_short_line():
    subjects = commit_subjects(FIRST_COMMIT_UNDER_THE_RULE)
    if subjects is None:
        pytest.skip(f"this checkout's history does not hold {FIRST_COMMIT_UNDER_THE_RULE} (a shallow clone)")
    assert subjects, "git log listed no commit"
    too_long = [subject for subject in subjects if len(subject) > MAX_SUBJECT]
    assert not too_long, f"subjects over {MAX_SUBJECT} characters (details belong in the body): {too_long}"
