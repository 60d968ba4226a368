"""CONTRIBUTING.md's recipes, followed: a toy source added as the recipe says, then seen working through `edgeseg run`.

The last test holds the recipe to the code: every name it gives exists, and it names what these tests used.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.synthetic import make_sample
from edgeseg.runtime import sources
from edgeseg.runtime.sources import SourceError, SourceKind

from . import test_sources

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "models" / "default" / "model.onnx"
CONTRIBUTING = REPO_ROOT / "CONTRIBUTING.md"
TOY_PREFIX = "toy://"
FRAME_SIZE = 96


# --- step 1 of the recipe: a capture (read() and release(), as cv2.VideoCapture has) and its opener ---------------


class ToyCapture:
    """``frames`` synthetic dermoscopy-like images, then the end, as a recording gives them; None: never ends."""

    def __init__(self, frames: int | None) -> None:
        self.frames = frames
        self.delivered = 0
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.frames is not None and self.delivered >= self.frames:
            return False, None
        if self.frames is None:
            time.sleep(0.005)  # a camera's pace, so the capture thread does not spin
        image, _ = make_sample(seed=27, index=self.delivered, size=FRAME_SIZE)
        self.delivered += 1
        return True, image

    def release(self) -> None:
        self.released = True


def toy_opener(text: str, width: int | None, height: int | None, fps: float | None):
    """``toy://N``: N frames. A wrong N is a SourceError that says how to write it."""
    count = text[len(TOY_PREFIX) :]
    if not (count.isascii() and count.isdigit() and int(count) > 0):
        raise SourceError(f"{text!r}: a toy source is toy://N with N the number of frames, e.g. toy://3")
    return (lambda: ToyCapture(int(count))), f"toy source of {count} frames"


def toy_camera_opener(text: str, width: int | None, height: int | None, fps: float | None):
    return (lambda: ToyCapture(None)), "toy camera"


# --- step 2: an entry in SOURCE_KINDS, ahead of the stream URL kind that takes any scheme:// ----------------------

TOY = SourceKind("toy recording", lambda text: text.startswith(TOY_PREFIX), toy_opener, live=False)
TOY_CAMERA = SourceKind("toy camera", lambda text: text == "toycam://0", toy_camera_opener)


@pytest.fixture
def toy_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SOURCE_KINDS", (TOY, TOY_CAMERA, *sources.SOURCE_KINDS))


def run(*args: str):
    return CliRunner().invoke(main, ["run", str(DEFAULT_MODEL), *args], catch_exceptions=False)


# --- step 3: seen working end to end ------------------------------------------------------------------------------


def test_a_registered_recording_kind_is_segmented_frame_by_frame(toy_kinds: None, tmp_path: Path) -> None:
    records, masks = tmp_path / "frames.jsonl", tmp_path / "masks"
    result = run("--source", "toy://3", "--no-show", "--jsonl", str(records), "--save-masks", str(masks))
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.output
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [record["index"] for record in lines] == [0, 1, 2], "a recording loses no frame"
    assert all((record["width"], record["height"]) == (FRAME_SIZE, FRAME_SIZE) for record in lines)
    assert all(record["lesion_present"] for record in lines), "the default model finds each toy frame's lesion"
    assert sorted(path.name for path in masks.iterdir()) == [f"frame_00000{n}_segmentation.png" for n in range(3)]


def test_a_registered_live_kind_runs_until_its_frames_are_counted(toy_kinds: None, tmp_path: Path) -> None:
    records = tmp_path / "frames.jsonl"
    result = run("--source", "toycam://0", "--no-show", "--max-frames", "2", "--jsonl", str(records))
    assert result.exit_code == 0, result.output
    assert "2 frames" in result.output and len(records.read_text().splitlines()) == 2


def test_a_wrong_toy_source_is_an_error_that_says_how_to_write_it(toy_kinds: None) -> None:
    result = run("--source", "toy://many", "--no-show")
    assert result.exit_code == 1
    assert "Error: 'toy://many': a toy source is toy://N" in result.output and "Traceback" not in result.output


def test_the_entry_goes_before_the_stream_url_which_takes_any_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sources.find_source_kind("toy://3").name == "stream URL"  # without the entry: opened as a stream
    monkeypatch.setattr(sources, "SOURCE_KINDS", (*sources.SOURCE_KINDS, TOY))
    assert sources.find_source_kind("toy://3").name == "stream URL", "an entry after the URL kind is never reached"
    monkeypatch.setattr(sources, "SOURCE_KINDS", (TOY, *sources.SOURCE_KINDS))
    assert sources.find_source_kind("toy://3") is TOY


# --- the recipe names what these tests used, and nothing that is gone -----------------------------------------------


def recipe(title: str) -> str:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    start = text.index(f"### {title}")
    end = text.find("\n##", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_source_recipe_names_the_files_and_names_these_tests_use() -> None:
    text = recipe("Add a source")
    used = ["runtime/sources.py", "SOURCE_KINDS", "SourceError", "Capture", "runtime/cli.py"]
    used += [f"tests/runtime/{Path(__file__).name}", "tests/runtime/test_sources.py"]
    assert not [name for name in used if f"`{name}`" not in text], f"the recipe must name each of {used}"
    signature = f"`SourceKind({', '.join(field.name for field in dataclasses.fields(SourceKind))})`"
    assert signature in text, f"the recipe must give the fields as they are: {signature}"
    for path in re.findall(r"`([\w/.-]+\.(?:py|md))`", text):
        assert (REPO_ROOT / path).is_file(), f"the recipe names {path}, which does not exist"
    for name in re.findall(r"`([A-Z_][A-Za-z0-9_]*)`", text):
        assert hasattr(sources, name) or hasattr(test_sources, name), f"the recipe names {name}, which is gone"
