"""CONTRIBUTING.md's three recipes, followed: a toy source, a toy backend and a toy model form, each added as its
recipe says and then seen working end to end (`edgeseg run`; `edgeseg export` then `edgeseg bench`).

The tests at the end hold each recipe to the code: every name it gives exists, and it names what these tests used.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core import forms
from edgeseg.core.forms import FormKind, ModelForm
from edgeseg.core.segmenter import BackendUnavailable
from edgeseg.core.synthetic import generate_dataset, make_sample
from edgeseg.export import export_run
from edgeseg.export.export_run import BuildContext, FormResult, attempt
from edgeseg.runtime import backends, sources
from edgeseg.runtime.loaders import read_onnx_info
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


# === Add a backend ==================================================================================================
# step 1: a Backend (name, precision, card, infer, close; a context manager). This one runs the model through
# onnxruntime's CPU provider under its own name and counts its calls: the model's own logits, honestly produced.


class ToyBackend:
    """An edgeseg ONNX on onnxruntime's CPU provider, as the backend "toy-cpu"; ``calls`` counts its runs."""

    opened: list[ToyBackend] = []  # every one opened, for the test to look at after a command ran

    def __init__(self, path: Path, threads: int | None) -> None:
        info = read_onnx_info(path)  # the card and precision in the file; RuntimeModelError names a bad file
        self.name, self.card, self.precision = "toy-cpu", info.card, info.precision
        try:
            import onnxruntime  # a backend's library: imported where it opens, never at the top of the module
        except ImportError:
            raise BackendUnavailable("toy-cpu: onnxruntime is not installed; pip install 'edgeseg[cpu]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.calls = 0
        ToyBackend.opened.append(self)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) at the card's input size -> float32 logits (N, 1, H, W)."""
        self.calls += 1
        (logits,) = self.session.run(None, {self.session.get_inputs()[0].name: batch})
        return logits.astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> ToyBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unavailable_toy(path: Path, threads: int | None) -> ToyBackend:
    raise BackendUnavailable("toy-cpu: the toy library is not installed here; pip install toy")


def with_toy_backend(monkeypatch: pytest.MonkeyPatch, onnx_backends: tuple[str, ...], runner=ToyBackend) -> None:
    """Steps 2 and 3: the name among the "onnx" kind's backends (fastest first) and its runner in RUNNERS."""
    kinds = tuple(FormKind("onnx", onnx_backends, needs_torch=False) if k.name == "onnx" else k for k in forms.KINDS)
    monkeypatch.setattr(forms, "KINDS", kinds)
    monkeypatch.setitem(backends.RUNNERS, "toy-cpu", runner)
    monkeypatch.setattr(ToyBackend, "opened", [])


@pytest.fixture
def toy_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """toy-cpu after onnxruntime's GPU providers, before its CPU one: the last of a kind stays export's gate backend."""
    with_toy_backend(monkeypatch, ("onnxruntime-tensorrt", "onnxruntime-cuda", "toy-cpu", "onnxruntime-cpu"))


def two_photos(folder: Path) -> Path:
    folder.mkdir()
    for index in range(2):
        image, _ = make_sample(seed=27, index=index, size=FRAME_SIZE)
        cv2.imwrite(str(folder / f"photo{index}.png"), image)
    return folder


def test_a_registered_backend_runs_photos_through_edgeseg_run(toy_backend: None, tmp_path: Path) -> None:
    photos = two_photos(tmp_path / "photos")
    result = run(str(photos), "--backend", "toy-cpu", "-o", str(tmp_path / "toy"))
    assert result.exit_code == 0, result.output
    assert f"model {DEFAULT_MODEL.name}: toy-cpu (fp32)" in result.output, "the run says which backend ran"
    (toy,) = ToyBackend.opened
    assert toy.calls >= 2 and toy.session is None, "it ran each photo and was closed after the run"
    rows = list(csv.DictReader((tmp_path / "toy" / "results.csv").open()))
    assert [row["image"] for row in rows] == ["photo0.png", "photo1.png"]
    assert all(row["lesion_present"] == "1" for row in rows), "the default model finds each toy photo's lesion"
    assert run(str(photos), "--backend", "onnxruntime-cpu", "-o", str(tmp_path / "ort")).exit_code == 0
    for row in rows:  # the model's own logits: the masks onnxruntime's CPU backend makes, pixel for pixel
        toy_mask, ort_mask = (cv2.imread(str(tmp_path / out / row["mask"])) for out in ("toy", "ort"))
        assert toy_mask is not None and np.array_equal(toy_mask, ort_mask)


def test_auto_tries_a_registered_backend_in_the_table_order(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with_toy_backend(monkeypatch, ("toy-cpu", "onnxruntime-cpu"))
    with backends.open_backend(DEFAULT_MODEL, "auto") as opened:
        assert opened.name == "toy-cpu", "the fastest of its kind, first in the table: auto picks it"
    with_toy_backend(monkeypatch, ("toy-cpu", "onnxruntime-cpu"), runner=unavailable_toy)
    with caplog.at_level(logging.INFO, logger="edgeseg.runtime"):
        with backends.open_backend(DEFAULT_MODEL, "auto") as opened:
            assert opened.name == "onnxruntime-cpu"
    assert "backend auto: skipped toy-cpu: the toy library is not installed here" in caplog.text


def test_a_registered_backend_is_refused_for_a_kind_it_does_not_run(toy_backend: None, tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendUnavailable, match="only the 'tensorrt' backend runs; .* to use toy-cpu"):
        backends.open_backend(engine, "toy-cpu")
    result = CliRunner().invoke(main, ["run", str(DEFAULT_MODEL), "--backend", "toy-gpu"])
    assert result.exit_code == 2 and "'toy-gpu' is not one of 'auto', 'onnxruntime-cpu', 'toy-cpu'" in result.output


def test_every_runtime_backend_of_the_table_has_a_runner() -> None:
    assert set(backends.RUNNERS) == set(forms.runtime_backends())


# === Add a model form ===============================================================================================
# steps 1 to 3: a row in FORMS after the form it is built from, a format function returning its Path, a builder.

TOY_FORM = ModelForm(
    "toy", "onnx", "model.toy.onnx", "fp32", "onnx", False, "the fp32 ONNX, copied: a toy form for a test"
)


def export_toy(onnx_path: Path, out_dir: Path) -> Path:
    """The format function (export/<format>_export.py): the form's file, built from its source, and its Path."""
    path = out_dir / TOY_FORM.file
    shutil.copyfile(onnx_path, path)
    return path


def build_toy_form(step: BuildContext, name: str) -> FormResult:
    """The builder: attempt() turns a failure into the report's "failed" row and checks the embedded card."""
    return attempt(name, lambda: export_toy(step.onnx_path, step.out_dir), step.card)


@pytest.fixture
def toy_form(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = list(forms.FORMS)
    rows.insert(rows.index(forms.form("int8-trt")) + 1, TOY_FORM)  # after the ONNX forms, before the engines
    monkeypatch.setattr(forms, "FORMS", tuple(rows))
    monkeypatch.setitem(export_run.BUILDERS, "toy", build_toy_form)


def test_a_registered_form_is_exported_gated_and_benchmarked(toy_form: None, tmp_path: Path) -> None:
    model = tmp_path / "export" / "model.onnx"
    model.parent.mkdir()
    shutil.copyfile(DEFAULT_MODEL, model)
    generate_dataset(tmp_path / "data", n=8, size=FRAME_SIZE, seed=7)
    runner = CliRunner()
    exported = runner.invoke(main, ["export", str(model), "--format", "toy", "-d", str(tmp_path / "data"), "-n", "2"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((model.parent / "export-report.json").read_text())
    (toy,) = [row for row in report["forms"] if row["name"] == "toy"]
    assert (toy["status"], toy["passed"], toy["precision"]) == ("built", True, "fp32"), toy
    assert toy["parity"]["images"] == 2 and report["passed"] is True
    assert "PASS toy" in exported.output
    bench_json = tmp_path / "bench.json"
    timed = runner.invoke(main, ["bench", str(model.parent), "--runs", "1", "--warmup", "0", "--json", str(bench_json)])
    assert timed.exit_code == 0, timed.output
    measured = [(row["form"], row["status"]) for row in json.loads(bench_json.read_text())["results"]]
    assert measured == [("model.onnx", "ok"), ("model.toy.onnx", "ok")], "bench finds the form by its file name"


# --- the recipes name what these tests used, and nothing that is gone ----------------------------------------------


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


def names_that_are_gone(text: str, modules: tuple) -> list[str]:
    """The files and capitalised names the recipe puts in `code` that no longer exist."""
    gone = [path for path in re.findall(r"`([\w/.-]+\.(?:py|md|toml))`", text) if not (REPO_ROOT / path).is_file()]
    for name in re.findall(r"`([A-Z_][A-Za-z0-9_]*)`", text):
        if not any(hasattr(module, name) for module in modules):
            gone.append(name)
    return gone


def signature(kind: type) -> str:
    return f"`{kind.__name__}({', '.join(field.name for field in dataclasses.fields(kind))})`"


def test_the_backend_recipe_names_the_files_and_names_these_tests_use() -> None:
    from edgeseg.core import segmenter
    from edgeseg.runtime import loaders

    text = recipe("Add a backend")
    used = ["runtime/backends.py", "RUNNERS", "core/forms.py", "KINDS", "Backend", "BackendUnavailable"]
    used += ["read_onnx_info(path)", "runtime/loaders.py", "runtime/cli.py", "CHANGELOG.md", "toy-cpu"]
    used += [f"tests/runtime/{Path(__file__).name}", "tests/runtime/test_backends.py"]
    assert not [name for name in used if f"`{name}`" not in text], f"the recipe must name each of {used}"
    assert signature(FormKind) in text, f"the recipe must give the fields as they are: {signature(FormKind)}"
    assert names_that_are_gone(text, (backends, forms, segmenter, loaders)) == []
    assert 'RUNNERS["toy-cpu"] = ToyBackend' in text and '"toy-cpu", "onnxruntime-cpu"), ' in text


def test_the_form_recipe_names_the_files_and_names_these_tests_use() -> None:
    from edgeseg.export import cli as export_cli
    from edgeseg.export import parity

    text = recipe("Add a model form")
    used = ["core/forms.py", "FORMS", "export/export_run.py", "BUILDERS", "FormResult", "Tolerances"]
    used += ["build_<form>_form(step: BuildContext, name) -> FormResult"]
    used += ["export/parity.py", "export/cli.py", "docs/export.md", "CHANGELOG.md", "tests/core/test_forms_table.py"]
    used += [f"tests/runtime/{Path(__file__).name}", "attempt(name, lambda: ..., step.card)", "step.onnx_path"]
    assert not [name for name in used if f"`{name}`" not in text], f"the recipe must name each of {used}"
    assert signature(ModelForm) in text, f"the recipe must give the fields as they are: {signature(ModelForm)}"
    assert names_that_are_gone(text, (forms, export_run, parity, export_cli)) == []
    values = (json.dumps(value) if isinstance(value, str) else str(value) for value in dataclasses.astuple(TOY_FORM))
    row = f"ModelForm({', '.join(values)})"
    assert row in text and 'BUILDERS["toy"] = build_toy_form' in text, "the recipe shows the test's toy form"
