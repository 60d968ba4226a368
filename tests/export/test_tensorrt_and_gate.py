"""The parity gate as data, form selection, engine naming; TensorRT engine tests (GPU only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeseg.export.parity import ImageComparison, Tolerances, compare_image, mask_iou, summarize
from edgeseg.export.pipeline import ExportError, select_forms
from edgeseg.export.tensorrt_export import Gpu, engine_filename, engine_unavailable_reason
from edgeseg.runtime.model_file import sidecar_path


def row(image: str, iou: float = 1.0, dice: float = 0.8, reference_dice: float = 0.8, dp: float = 0.0, finite: bool = True):
    return ImageComparison(image=image, max_abs_probability=dp, mean_abs_probability=dp / 2, flipped_fraction=1 - iou,
                           mask_iou=iou, dice=dice, threshold_jaccard=dice, reference_dice=reference_dice,
                           reference_threshold_jaccard=reference_dice, finite=finite, empty=False, reference_empty=False)


def test_fp16_gate_names_the_form_the_image_and_the_number():
    parity = summarize("engine", "fp16", [row("ISIC_1", 0.999), row("ISIC_2", 0.97), row("ISIC_3", 1.0)], Tolerances())
    assert not parity.passed
    assert parity.min_mask_iou_image == "ISIC_2"
    assert "engine: min mask IoU with the reference 0.9700 < 0.98 on ISIC_2" in parity.breaches
    assert any(message.startswith("engine: mean mask IoU with the reference 0.9897 < 0.995") for message in parity.breaches)


def test_int8_gate_on_dice_change_and_nan():
    rows = [row("a", 0.99, dice=0.80), row("b", 0.99, dice=0.75, reference_dice=0.80, finite=False)]
    parity = summarize("int8", "int8", rows, Tolerances())
    assert "int8: |delta Dice| 0.0250 > 0.01 (largest change -0.0500 on b)" in parity.breaches
    assert parity.nonfinite_images == ["b"] and parity.breaches[0].startswith("int8: NaN or Inf")
    assert summarize("int8", "int8", [row("a", 0.99)], Tolerances()).passed  # no min-IoU rule for INT8


def test_fp32_gate_is_on_probability():
    assert summarize("onnx", "fp32", [row("a", dp=5e-5)], Tolerances()).passed
    failed = summarize("onnx", "fp32", [row("a", dp=5e-5), row("b", dp=0.02)], Tolerances())
    assert failed.breaches == ["onnx: max |delta probability| 0.02 > 0.0001 on b"]


def test_mask_iou_counts_both_empty_as_agreement_and_compare_image_sees_nan():
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty) == 1.0
    full = np.ones((4, 4), bool)
    assert mask_iou(full, empty) == 0.0
    probability = np.full((4, 4), 0.9, np.float32)
    broken = probability.copy()
    broken[0, 0] = np.nan
    result = compare_image("x", probability, full, broken, full, truth=full)
    assert not result.finite and result.max_abs_probability == np.inf


def test_select_forms():
    assert select_forms() == (("onnx", "fp16", "int8", "engine", "engine-int8"), frozenset())
    assert select_forms(fp16=True) == (("onnx", "fp16", "engine"), frozenset())
    assert select_forms(["engine-int8"]) == (("onnx", "int8", "engine-int8"), frozenset({"engine-int8"}))
    with pytest.raises(ExportError, match="unknown format"):
        select_forms(["tflite"])


def test_engine_file_is_named_by_tensorrt_gpu_and_precision():
    orin = Gpu("Orin", 8, 7)
    assert engine_filename("model", "10.3.0.30", orin, "fp16") == "model.trt10.3.sm87.fp16.engine"
    assert sidecar_path(Path("/m/model.trt10.3.sm87.fp16.engine")) == Path("/m/model.trt10.3.sm87.fp16.engine.json")
    assert orin.has_fast_fp16 and not Gpu("GTX 1080", 6, 1).has_fast_fp16


# --- on a GPU host with TensorRT ------------------------------------------------------------------

needs_engine = pytest.mark.skipif(engine_unavailable_reason() is not None,
                                  reason=f"no TensorRT engine build here: {engine_unavailable_reason()}")


@pytest.mark.gpu
@needs_engine
def test_engine_build_naming_and_sidecar(trained_run_dir: Path, tmp_path: Path):
    import tensorrt as trt

    from edgeseg.card import load_card
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.export.tensorrt_export import build_engine, gpu_properties
    from edgeseg.runtime.model_file import read_card, sha256_of
    from edgeseg.train.model import load_model

    model, card = load_model(trained_run_dir)
    onnx_path = export_onnx(model, card, tmp_path / "model.onnx")
    engine = build_engine(onnx_path, card, tmp_path, precision="fp16", workspace_mib=512)
    gpu = gpu_properties()
    assert engine.name == engine_filename("model", trt.__version__, gpu, "fp16")
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_sha256"] == sha256_of(onnx_path) and sidecar["engine_sha256"] == sha256_of(engine)
    assert sidecar["precision"] == "fp16" and sidecar["compute_capability"] == gpu.compute_capability
    assert sidecar["card"] == load_card(trained_run_dir).to_dict() and read_card(engine) == card
    assert list(tmp_path.glob("*.timing.cache"))  # kept for the next build


@pytest.mark.gpu
@needs_engine
def test_engine_parity(trained_run_dir: Path, tmp_path: Path):
    from click.testing import CliRunner

    from edgeseg.cli import main

    result = CliRunner().invoke(main, ["export", str(trained_run_dir), "--out", str(tmp_path), "--format", "engine",
                                       "--latency-runs", "2"], catch_exceptions=False)
    report = json.loads((tmp_path / "export-report.json").read_text())
    engine = next(form for form in report["forms"] if form["name"] == "engine")
    assert engine["status"] == "built", engine["reason"]
    assert engine["passed"] is True and result.exit_code == 0, result.output
