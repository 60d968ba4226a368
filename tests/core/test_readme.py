"""The README's Python example and the docstring examples of the Python front door run as written."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import edgeseg

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- run by tests/core/test_readme.py -->"


def test_the_readme_python_example_runs(tmp_path):
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, "the README lost its tested Python example"
    code = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(480, 640) float32" in done.stdout and "'inference'" in done.stdout


def test_the_front_door_docstring_examples_run():
    failures, tried = doctest.testmod(edgeseg, verbose=False)
    assert tried > 0 and failures == 0
