"""The distribution: one package whose parts live in top-level folders, a runtime without torch."""

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgeseg
from edgeseg.cli import COMMANDS, main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_runtime_does_not_import_torch():
    code = (
        "import sys, pkgutil, importlib, edgeseg.runtime as r\n"
        "for m in pkgutil.iter_modules(r.__path__): importlib.import_module('edgeseg.runtime.' + m.name)\n"
        "import edgeseg.core.card, edgeseg.core.preprocess, edgeseg.core.metrics, edgeseg.core.data, edgeseg.cli\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'torch', 'segmentation_models_pytorch', 'timm'}"
        " or n.startswith(('edgeseg.train', 'edgeseg.export')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT.parent)


def test_parts_are_imported_from_the_top_level_folders():
    for part in ("train", "export", "runtime"):
        module = importlib.import_module(f"edgeseg.{part}")
        assert Path(module.__file__).parent == REPO_ROOT / part


def test_every_registered_command_loads_and_explains_itself():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Example" in sub.output or "example" in sub.output, f"`edgeseg {name} --help` has no example"


def test_version_option():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and edgeseg.__version__ in result.output


@pytest.mark.slow
def test_wheel_holds_the_parts_as_subpackages(tmp_path):
    # Build from a copy: setuptools leaves a build/ folder in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "runs", "demo-out", "*.egg-info", "__pycache__", "data"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)], check=True
    )
    (wheel,) = tmp_path.glob("edgeseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "edgeseg/cli.py",
        "edgeseg/core/card.py",
        "edgeseg/loading/open.py",
        "edgeseg/train/__init__.py",
        "edgeseg/export/__init__.py",
        "edgeseg/runtime/__init__.py",
    ):
        assert module in names, f"{module} missing from the wheel"
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
