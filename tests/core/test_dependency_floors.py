"""No dependency floor in pyproject.toml admits a release older than the fix of an advisory we know.

A floor is what a fresh install may resolve to (an old lock, a constraints file, a distribution's
package), so a floor below a fix lets a vulnerable release in without a word. When an advisory is
published for a dependency, add its row here and raise the floor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROJECT = "edgeseg"

# (package, first fixed release, advisory). Only advisories whose fixed release was confirmed.
KNOWN_FIXES: tuple[tuple[str, str, str], ...] = (
    (
        "opencv-python",
        "4.8.1.78",
        "CVE-2023-4863 (GHSA-qr4w-53vh-m672): the bundled libwebp's heap overflow; "
        "images are decoded by content, so any file may be a WebP",
    ),
    (
        "torch",
        "2.6",
        "CVE-2025-32434 (GHSA-53q9-r3pm-6pq6): torch.load(weights_only=True) runs code; "
        "train --resume loads a checkpoint",
    ),
    (
        "torch",
        "2.10",
        "CVE-2026-24747 (GHSA-63cw-57p8-fm3p): memory corruption in the weights_only unpickler; "
        "train --resume loads a checkpoint",
    ),
    (
        "torchvision",
        "0.25",
        "not an advisory: the torchvision built for torch 2.10, the torch floor (an older one pins an older torch)",
    ),
    ("tqdm", "4.66.3", "CVE-2024-34062 (GHSA-g7vv-2v7x-gj9p): CLI arguments passed to eval"),
    (
        "onnx",
        "1.21",
        "CVE-2026-27489, CVE-2026-34447, CVE-2026-34445: external data read through symlinks and "
        "out of the model's folder; export reads a user's ONNX",
    ),
    ("pytest", "9.0.3", "CVE-2025-71176 (GHSA-6w46-j5rx-g56g): /tmp/pytest-of-USER taken over by another user"),
)


def load_pyproject() -> dict:
    with open(PYPROJECT, "rb") as stream:
        return tomllib.load(stream)


def requirement_groups(pyproject: dict) -> dict[str, list[Requirement]]:
    """The base requirements and every extra, each extra with the extras it names expanded."""
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    groups = {"base": [Requirement(text) for text in project["dependencies"]]}
    for extra in extras:
        groups[f"extra {extra}"] = expand_extra(extra, extras, seen=set())
    return groups


def expand_extra(extra: str, extras: dict[str, list[str]], seen: set[str]) -> list[Requirement]:
    if extra in seen:
        return []
    seen.add(extra)
    requirements = []
    for text in extras[extra]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == PROJECT:
            for named in sorted(requirement.extras):
                requirements += expand_extra(named, extras, seen)
        else:
            requirements.append(requirement)
    return requirements


def floor(requirement: Requirement) -> Version | None:
    """The lowest release the requirement admits, or None when it has no lower bound.

    ``>X`` counts as X: ``>2.9`` still admits 2.9.1, so it is judged as if it admitted 2.9.
    """
    bounds = [
        Version(spec.version.removesuffix(".*"))
        for spec in requirement.specifier
        if spec.operator in (">=", ">", "==", "~=", "===")
    ]
    return max(bounds, default=None)


def floor_problems(requirement: Requirement) -> list[str]:
    """One line for each known fix this requirement's floor falls below."""
    problems = []
    lowest = floor(requirement)
    for package, fixed, advisory in KNOWN_FIXES:
        if canonicalize_name(package) != canonicalize_name(requirement.name):
            continue
        if lowest is None:
            problems.append(f"{requirement} has no lower bound; require >={fixed}: {advisory}")
        elif lowest < Version(fixed):
            problems.append(f"{requirement} admits {lowest}, below {fixed}: {advisory}")
    return problems


def test_no_floor_admits_a_release_below_a_known_fix():
    problems = [
        f"{group}: {problem}"
        for group, requirements in requirement_groups(load_pyproject()).items()
        for requirement in requirements
        for problem in floor_problems(requirement)
    ]
    assert not problems, "raise these floors in pyproject.toml:\n" + "\n".join(problems)


def test_every_package_of_the_table_is_still_required():
    """A renamed or dropped dependency leaves its rows checking nothing: update the table with it."""
    required = {
        canonicalize_name(requirement.name)
        for requirements in requirement_groups(load_pyproject()).values()
        for requirement in requirements
    }
    missing = sorted({package for package, _, _ in KNOWN_FIXES if canonicalize_name(package) not in required})
    assert not missing, f"KNOWN_FIXES names packages pyproject.toml no longer requires: {missing}"


@pytest.mark.parametrize(
    ("text", "admitted"),
    [
        ("torch>=2.10,<3", True),
        ("torch>=2.11", True),
        ("torch==2.14.*", True),
        ("torch~=2.10", True),
        ("Torch>=2.4,<3", False),  # names compare as pip compares them
        ("torch>2.9", False),  # admits 2.9.1
        ("torch<3", False),  # no lower bound at all
        ("torch", False),
        ("numpy", True),  # no advisory known for it
    ],
)
def test_floor_check(text, admitted):
    assert (not floor_problems(Requirement(text))) == admitted


def test_extras_are_expanded_through_the_extras_they_name():
    pyproject = {
        "project": {
            "dependencies": [],
            "optional-dependencies": {
                "train": ["torch>=2.4"],
                "export": ["edgeseg[train]", "onnx>=1.21"],
                "all": ["edgeseg[export]"],
            },
        }
    }
    groups = requirement_groups(pyproject)
    assert [str(requirement) for requirement in groups["extra all"]] == ["torch>=2.4", "onnx>=1.21"]
