"""The README stays a page a newcomer finishes: short, its Python example runs as written, its links lead
somewhere, it names no machine's data folder or internal run, and its test command is the one CI runs.
The docstring examples of the Python front door run too."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgeseg

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
MARKER = "<!-- run by tests/core/test_readme.py -->"
MAX_LINES = 200
VERBS = ("synth", "data check", "train", "eval", "export", "run", "bench", "info", "doctor")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def python_example(text: str) -> str:
    """The README's tested Python block: the first one after the marker."""
    assert MARKER in text, "the README lost its tested Python example"
    return re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S).group(1)


def write_photo(path: Path) -> None:
    import cv2

    from edgeseg.core.synthetic import make_sample

    path.parent.mkdir(parents=True, exist_ok=True)
    image, _ = make_sample(3, 1, 320)
    assert cv2.imwrite(str(path), image)


def test_the_readme_is_at_most_200_lines():
    lines = len(readme().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"


def test_the_readme_python_example_runs(tmp_path):
    code = python_example(readme())
    photos = re.findall(r"segment\(\"([^\"]+)\"\)", code)
    assert photos, "the example segments a photo by its path"
    for photo in photos:
        write_photo(tmp_path / photo)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "<Segmentation 'lesion' 320x320" in done.stdout and "(320, 320)" in done.stdout, done.stdout
    assert (tmp_path / "out" / "lesion_overlay.jpg").is_file()
    assert (tmp_path / "out" / "lesion_segmentation.png").is_file()


def test_the_front_door_docstring_examples_run():
    failures, tried = doctest.testmod(edgeseg, verbose=False)
    assert tried > 0 and failures == 0


def doc_pages() -> list[Path]:
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {github_anchor(match) for match in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", doc_pages(), ids=lambda page: page.name)
def test_every_local_link_of_the_docs_leads_to_a_file_and_heading(page: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO_ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_readme_links_every_page_of_the_docs():
    text = readme()
    missing = [page.name for page in sorted((REPO_ROOT / "docs").glob("*.md")) if f"(docs/{page.name})" not in text]
    assert not missing, f"README.md does not link {missing}"


def test_the_readme_names_no_machine_folder_or_internal_run():
    text = readme()
    for internal in ("../shared", "shared/data", "default-v1", "ft-lovasz", "lite2-ft", "accuracy-cpu"):
        assert internal not in text, f"README.md names {internal!r}: use data/isic2018, my-data/, runs/mine"


def test_the_readme_shows_every_verb_and_the_install_from_a_clone():
    text = readme()
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("edgeseg ")]
    for verb in VERBS:
        assert any(command.startswith(f"edgeseg {verb} ") or command == f"edgeseg {verb}" for command in commands), verb
    assert any(
        line.startswith("git clone ") and "pip install -e '.[cpu]'" in line
        for line in (line.strip() for line in text.splitlines())
    )
    assert "pip install -e '.[gpu]'" in text and "edgeseg run --camera 0" in text and "edgeseg run photos/" in text


def test_ci_runs_the_test_command_the_readme_gives():
    text = readme()
    development = text[text.index("## Development") :]
    readme_command = re.search(r"^ {4}(make \w+)", development, re.M).group(1)
    assert readme_command == "make test"
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(rf"^[^#\n]*\b{readme_command}\b", ci, re.M), f".ci/run does not run `{readme_command}`"
