"""`edgeseg info [MODEL]`: the card, the forms beside the model and what this host can run it on; as text and JSON."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.card import ModelCard, save_card
from edgeseg.core.names import WEIGHTS_FILENAME, default_model_path
from edgeseg.core.progress import set_quiet
from edgeseg.info import why_not
from edgeseg.runtime.loaders import read_onnx_info


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return read_onnx_info(default_model_path()).card


@pytest.fixture
def export_folder(tmp_path: Path) -> Path:
    """A folder holding a copy of the default model, as `edgeseg export` leaves one with nothing more exported."""
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copyfile(default_model_path(), folder / "model.onnx")
    return folder


@pytest.fixture(autouse=True)
def not_quiet_after():
    """-q sets a process-wide switch (edgeseg.core.progress): leave it off for the tests that follow."""
    yield
    set_quiet(False)


def info(*arguments: str):
    return CliRunner().invoke(main, ["info", *arguments])


def test_info_on_the_default_model_says_the_card_the_forms_and_the_host(card):
    result = info()
    assert result.exit_code == 0, result.output
    text = result.stdout
    made = card.provenance
    for part in (
        f"model.onnx: ONNX, fp32 ({default_model_path()})",
        f"encoder {card.encoder}",
        "input          256x256 (height x width), RGB",
        "scaled by 1/255",
        f"threshold {card.output.threshold}",
        "the largest region kept",
        f"{made.data}: {made.train_images} training",
        "CC0 1.0",
        f"{made.epochs} epochs, best {made.best_epoch}",
        f"val_metrics                  {made.val_images} images  Dice {made.val_metrics['dice']:.4f}",
        "val_camera_framed",
        f"forms in {default_model_path().parent}:",
        f"{default_model_path().stat().st_size / 1e6:.1f} MB  gate passed  <- this one",
        "onnxruntime-cpu      can run it",
    ):
        assert part in text, part
    assert sum(line.startswith("  model") for line in text.splitlines()) == 1  # no other form beside it
    assert "no model named: using edgeseg's default model" in result.stderr
    quiet = info("-q")
    assert quiet.exit_code == 0 and quiet.stdout == text and "default model" not in quiet.stderr


def test_info_as_json_holds_the_card_the_forms_and_the_backends(card, tmp_path):
    result = info("-j", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON alone; the text went to stderr
    assert "forms in" in result.stderr
    assert report["card"] == json.loads(json.dumps(card.to_dict())) and report["kind"] == "onnx"
    assert [(form["name"], form["size_bytes"], form["this"]) for form in report["forms"]] == [
        ("model.onnx", default_model_path().stat().st_size, True)
    ]
    backends = {row["backend"]: row["why_not"] for row in report["backends"]}
    assert set(backends) == {"onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt"}
    assert backends["onnxruntime-cpu"] is None and report["auto"] in backends and backends[report["auto"]] is None
    written = info("--json", str(tmp_path / "info.json"))
    assert written.exit_code == 0 and json.loads((tmp_path / "info.json").read_text())["card"] == report["card"]
    assert "forms in" in written.stdout


def test_info_lists_each_form_beside_the_model_with_its_size(export_folder):
    alone = json.loads(info(str(export_folder / "model.onnx"), "-j", "-").stdout)
    assert [form["name"] for form in alone["forms"]] == ["model.onnx"]
    shutil.copyfile(export_folder / "model.onnx", export_folder / "model.fp16.onnx")
    result = info(str(export_folder))  # a folder of forms: its first form speaks for it
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("  model.")]
    assert [line.split()[0] for line in lines] == ["model.onnx", "model.fp16.onnx"]
    assert lines[0].endswith("<- this one") and "9.8 MB" in lines[1] and "gate" not in lines[1]


def test_info_reads_an_engine_from_its_sidecar(card, tmp_path):
    engine = tmp_path / "model.trt10.3.sm87-orin.fp16.engine"
    engine.write_bytes(b"\x00serialized plan" * 64)
    sidecar = {
        "card": card.to_dict(),
        "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "tensorrt_version": "10.3.0",
        "compute_capability": "8.7",
        "gpu_name": "Orin",
        "precision": "fp16",
    }
    (tmp_path / (engine.name + ".json")).write_text(json.dumps(sidecar))
    result = info(str(engine))
    assert result.exit_code == 0, result.output
    assert f"{engine.name}: TensorRT engine, fp16" in result.stdout
    assert "built with TensorRT 10.3.0 for Orin (compute capability 8.7)" in result.stdout
    assert "TensorRT fp16" in result.stdout and "with its sidecar  <- this one" in result.stdout
    assert "tensorrt             cannot: " in result.stdout  # no TensorRT here, or not the one it was built with


def test_info_on_a_training_run_reads_its_card_without_pytorch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_card(ModelCard(input_size=(64, 96)), run)
    (run / WEIGHTS_FILENAME).write_bytes(b"weights")
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # importing torch now fails, as where it is not installed\n"
        "from edgeseg.cli import main\n"
        f"main(['info', {str(run)!r}, '--json', '-'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "torch" and report["card"]["input_size"] == [64, 96]
    assert [row["backend"] for row in report["backends"]] == ["torch-cpu", "torch-cuda"]
    assert "input          64x96 (height x width)" in done.stderr and "provenance     not recorded" in done.stderr


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.onnx", b"not a model at all", "not a readable ONNX model"),
        ("notes.txt", b"hello", "not a model form"),
        ("empty", None, "no model here"),
    ],
)
def test_a_bad_model_is_an_error_that_names_it(tmp_path, name, content, says):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = info(str(path))
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {path}") and says in result.stderr
    assert "Traceback" not in result.output


def findings(providers: list[str], gpus: list[dict] | None, cuda: str | None = "12.2", trt_provider: str | None = None):
    """What `edgeseg doctor` finds, reduced to what `info` reads."""
    build = {"version": "1.22.0", "cuda": cuda, "providers": providers, "problem": None, "distributions": {}}
    return {
        "onnxruntime": build,
        "gpus": gpus,
        "gpus_reason": "nvidia-smi not found on PATH",
        "jetson": False,
        "tensorrt": None,
        "tensorrt_provider": {"can_start": trt_provider is None, "why_not": trt_provider},
        "torch": None,
    }


def test_why_a_backend_cannot_run_comes_from_what_doctor_finds():
    model = Path("model.onnx")
    cpu_build = findings(["CPUExecutionProvider"], None, cuda=None)
    assert why_not("onnxruntime-cpu", cpu_build, model) is None
    assert why_not("onnxruntime-cuda", cpu_build, model) == (
        "this onnxruntime (1.22.0, the CPU build) has no CUDAExecutionProvider"
    )
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    no_gpu = findings(gpu_build, None)
    assert why_not("onnxruntime-cuda", no_gpu, model) == "no NVIDIA GPU (nvidia-smi not found on PATH)"
    with_gpu = findings(gpu_build, [{"name": "NVIDIA L4", "driver": "570.1"}], trt_provider="TensorRT is not installed")
    assert why_not("onnxruntime-cuda", with_gpu, model) is None
    assert why_not("onnxruntime-tensorrt", with_gpu, model) == "TensorRT is not installed"
    assert why_not("torch-cpu", with_gpu, model).startswith("PyTorch is not installed")
    assert why_not("tensorrt", with_gpu, Path("model.engine")).startswith("TensorRT is not installed")
