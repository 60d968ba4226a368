"""No committed file that ships or records names a machine: no absolute path of a home, work, temporary or
mounted folder, POSIX or Windows, in model metadata, package data, docs or benchmark records.

A path of the machine that made a file means nothing on the next one (and names a user); records name a
data set by name and paths relative to the checkout (``edgeseg.core.files.portable_path``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

MACHINE_PATH = re.compile(
    r"""
    (?<![\w./~:-])                        # where an absolute path starts: not inside a URL, a relative path or a word
    (?: /home/[^/\s"'`]+ | /Users/[^/\s"'`]+ | /root/ | /work/ | /tmp/ | /mnt/ | /var/folders/ | /private/ )
    [^\s"'`)\],;]*                        # the rest of it, for the message
  | (?<![\w\\]) [A-Za-z]:\\{1,2} (?=[\w.$-]) [^\s"'`)\],;]*   # a Windows drive path (C:\Users, in JSON C:\\Users)
""",
    re.VERBOSE,
)

# Folders a walk skips where the tree is no git checkout: environments, caches, build outputs, runs and data.
SKIPPED_FOLDERS = {
    ".git",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "runs",
    "data",
    "out",
    "demo-out",
    ".whl",
    ".gl",
    ".gpu-data",
}
SKIPPED_PATTERNS = (".venv*", "*.egg-info")
DOC_NAMES = ("README*", "CONTRIBUTING*", "CHANGELOG*")


def committed_files() -> list[str]:
    """Repository-relative paths of the files git would commit: tracked, or new and not ignored."""
    if (REPO_ROOT / ".git").exists():
        try:
            listed = subprocess.run(
                ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            return sorted(name for name in listed if (REPO_ROOT / name).is_file())
        except (OSError, subprocess.CalledProcessError):
            pass  # no git here: walk the tree instead
    return walked_files()


def walked_files() -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [
            name
            for name in subfolders
            if name not in SKIPPED_FOLDERS and not any(fnmatch.fnmatch(name, pattern) for pattern in SKIPPED_PATTERNS)
        ]
        found += [(Path(folder) / name).relative_to(REPO_ROOT).as_posix() for name in files]
    return sorted(found)


def package_data_files(files: list[str]) -> set[str]:
    """The files pyproject.toml's [tool.setuptools.package-data] ships, as repository paths."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set()
    for package, patterns in setuptools.get("package-data", {}).items():
        folder = setuptools.get("package-dir", {}).get(package, package.replace(".", "/"))
        shipped |= {name for name in files for pattern in patterns if fnmatch.fnmatch(name, f"{folder}/{pattern}")}
    return shipped


def is_doc_or_record(name: str) -> bool:
    """Docs (every markdown file, docs/, README, CONTRIBUTING, CHANGELOG) and benchmark records."""
    return (
        name.endswith(".md")
        or name.startswith(("docs/", "benchmarks/results/"))
        or any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in DOC_NAMES)
    )


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, path) of every absolute path of a machine in ``text``."""
    return [
        (number, found.group(0))
        for number, line in enumerate(text.splitlines(), start=1)
        for found in MACHINE_PATH.finditer(line)
    ]


@pytest.mark.parametrize(
    "text",
    [
        '"data": "/work/shared/data/isic2018",',
        "--out /tmp/lite1-ft",
        "`/work/main/.venv/bin/python x.py`",
        "/home/ana/edgeseg/runs",
        "/root/.cache/edgeseg",
        "/Users/ana/data",
        "--data=/mnt/shared/isic2018",
        "/var/folders/x1/T/tmpab12",
        "/private/var/tmp/run",
        r'"C:\\Users\\ana\\isic2018"',
        r"D:\data\isic2018",
    ],
)
def test_the_pattern_finds_a_machine_path(text: str) -> None:
    assert machine_paths(text), text


@pytest.mark.parametrize(
    "text",
    [
        "/usr/bin/chromium",
        "https://github.com/home/ana/tmp/x",
        "http://127.0.0.1:8080/tmp/stream.mjpg",
        "/etc/nv_tegra_release",
        "/dev/video0",
        "../shared/data/isic2018",
        "runs/tmp/x",
        ".gpu-data/isic2018",
        "~/edgeseg-venv/bin/pip",
        "/usr/src/tensorrt/bin/trtexec",
        "/proc/cpuinfo",
        "isic2018",
        "note:\\n ratio 1:2",
        "/home",
        "file /workspace/x",
    ],
)
def test_the_pattern_leaves_other_paths_and_urls_alone(text: str) -> None:
    assert not machine_paths(text), machine_paths(text)


def test_no_doc_record_or_package_file_holds_a_machine_path() -> None:
    files = committed_files()
    package_data = package_data_files(files)
    scanned = [
        name for name in files if (is_doc_or_record(name) or name in package_data) and not name.endswith(".onnx")
    ]
    assert "README.md" in scanned and any(name.startswith("benchmarks/results/") for name in scanned)
    found = []
    for name in scanned:
        data = (REPO_ROOT / name).read_bytes()
        if b"\0" in data:
            continue  # an image: no text to hold a path
        found += [f"{name}:{number}: {path}" for number, path in machine_paths(data.decode("utf-8", "replace"))]
    assert not found, (
        "absolute paths of a machine in committed files (name a data set by name, a path relative "
        "to the checkout: edgeseg.core.files.portable_path):\n" + "\n".join(found)
    )


def test_no_model_metadata_holds_a_machine_path() -> None:
    onnx = pytest.importorskip("onnx", reason="reading the models' metadata needs the onnx package")
    models = [name for name in committed_files() if name.startswith("models/") and name.endswith(".onnx")]
    assert models, "no committed ONNX model under models/"
    found = []
    for name in models:
        model = onnx.load(str(REPO_ROOT / name), load_external_data=False)
        for prop in model.metadata_props:
            found += [
                f"{name}: metadata_props[{prop.key!r}], line {number} of its value: {path}"
                for number, path in machine_paths(prop.value)
            ]
    assert not found, "absolute paths of a machine in model metadata (the card names its data by name):\n" + "\n".join(
        found
    )
