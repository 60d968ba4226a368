"""A newcomer's path through the README, as written: clone, the install line, `edgeseg run` on a folder of
photos, the Python example.

The clone is of a snapshot of this working tree (the files git would commit, committed into a scratch
repository), so the test sees what the next commit ships. The install line and the commands are read from
the README, not retyped here: only the repository's address is swapped for the snapshot's. A fresh virtual
environment gets what that line installs from the package index (a couple of minutes); the test skips only
where pip cannot reach an index.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MARKER = "<!-- run by tests/core/test_readme.py -->"
PIP_TIMEOUT_S = 900
# pip's words when it cannot reach an index (as in tests/test_gpu_extra_install.py).
CANNOT_FETCH = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "ProxyError",
    "(from versions: none)",
)
PHOTOS = ("ISIC_0000001", "lesion", "sub/ISIC_0000002")

pytestmark = pytest.mark.slow


def readme_code_lines() -> list[str]:
    """Every line of the README's indented code blocks, without its comment."""
    lines = re.findall(r"^ {4}(\S.*)$", README.read_text(encoding="utf-8"), re.M)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines]


def install_line() -> str:
    (line,) = [line for line in readme_code_lines() if line.startswith("git clone ")]
    return line


def folder_command() -> str:
    return next(line for line in readme_code_lines() if re.fullmatch(r"edgeseg run \S+/", line))


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S).group(1)


def git(*arguments: str, cwd: Path) -> str:
    return subprocess.run(["git", *arguments], cwd=cwd, capture_output=True, text=True, check=True).stdout


def snapshot_repository(destination: Path) -> Path:
    """A repository holding one commit: the files of this working tree that git would commit."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO_ROOT).splitlines()
    for name in listed:
        if (REPO_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, destination / name)
    git("init", "-q", cwd=destination)
    git("add", "-A", cwd=destination)
    git(
        "-c",
        "user.name=edgeseg tests",
        "-c",
        "user.email=tests@edgeseg.invalid",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "snapshot of the working tree",
        cwd=destination,
    )
    return destination


def shell(line: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"  [{time.monotonic() - started:6.1f} s] {line[:150]} -> {done.returncode}")
    return done


def write_photos(folder: Path) -> None:
    """A few synthetic dermoscopy-like photos, one in a subfolder (made with this checkout's edgeseg)."""
    import cv2

    from edgeseg.core.synthetic import make_sample

    for index, name in enumerate(PHOTOS):
        path = folder / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image, _ = make_sample(3, index, 320)
        assert cv2.imwrite(str(path), image)


def install_as_the_readme_says(tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """The README's install line in a fresh venv, the snapshot cloned in place of the repository's address."""
    source = snapshot_repository(tmp_path / "source")
    work = tmp_path / "work"
    work.mkdir()
    words = install_line().split(" ")
    assert words[:2] == ["git", "clone"], words
    line = " ".join([*words[:2], str(source), *words[3:]])
    done = shell(line, work, env, PIP_TIMEOUT_S)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        tail = "\n".join(output.strip().splitlines()[-15:])
        if any(sign in output for sign in CANNOT_FETCH):
            pytest.skip(f"pip cannot fetch here: {tail}")
        pytest.fail(f"the README's install line failed (exit {done.returncode}): {line}\n{tail}")
    clone = next(path for path in work.iterdir() if path.is_dir())
    return clone, env


def check_folder_run(clone: Path, env: dict[str, str]) -> None:
    write_photos(clone / "photos")
    done = shell(folder_command(), clone, env, 300)
    assert done.returncode == 0, f"{folder_command()} (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    results = clone / "edgeseg-results" / "run1"
    for name in PHOTOS:
        for suffix in ("_overlay.jpg", "_segmentation.png"):
            assert (results / f"{name}{suffix}").is_file(), f"{name}{suffix} missing: {sorted(results.rglob('*'))}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for name in PHOTOS:
        assert sum(line.startswith(f"{name}.jpg") for line in lines) == 1, f"no line of figures for {name}:\n{lines}"
    with (results / "results.csv").open(newline="", encoding="utf-8") as table:
        assert len(list(csv.DictReader(table))) == len(PHOTOS)


@pytest.mark.skipif(shutil.which("git") is None, reason="cloning needs git")
def test_a_newcomer_installs_from_a_clone_and_segments_a_folder_of_photos(tmp_path: Path, fresh_venv) -> None:
    clone, env = install_as_the_readme_says(tmp_path, fresh_venv[1])
    python = Path(env["VIRTUAL_ENV"]) / "bin" / "python"
    location = subprocess.run(
        [str(python), "-c", "import edgeseg; print(edgeseg.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert location.returncode == 0 and Path(location.stdout.strip()).is_relative_to(clone), location
    torch = subprocess.run([str(python), "-c", "import torch"], env=env, capture_output=True, timeout=120)
    assert torch.returncode != 0, "the CPU install brought PyTorch"

    check_folder_run(clone, env)

    example = clone / "example"
    for photo in re.findall(r"segment\(\"([^\"]+)\"\)", python_example()):
        write_photos(example / Path(photo).parent)
    done = subprocess.run(
        [str(python), "-c", python_example()], cwd=example, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for written in ("lesion_overlay.jpg", "lesion_segmentation.png"):
        assert (example / "out" / written).is_file(), f"the README's example wrote no out/{written}"
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)  # a few hundred MB; kept only where the test failed
