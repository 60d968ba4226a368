"""The parity gate as data, form selection, engine naming and the TensorRT version's path; TensorRT engine
tests on a GPU. The builder and backend against a strict double of TensorRT: test_tensorrt_double.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeseg.export.export_run import ExportError, FormResult, fp32_norm_retries, select_forms
from edgeseg.export.parity import MEAN_RULES_MIN_IMAGES, ImageComparison, Tolerances, compare_image, mask_iou, summarize
from edgeseg.export.tensorrt_export import (
    Gpu,
    builds_strongly_typed,
    engine_filename,
    engine_unavailable_reason,
    gpu_slug,
    timing_cache_filename,
)
from edgeseg.runtime.loaders import sidecar_path


def row(
    image: str,
    iou: float = 1.0,
    dice: float = 0.8,
    reference_dice: float = 0.8,
    dp: float = 0.0,
    finite: bool = True,
    confident_flips: int = 0,
    confident_pixels: int = 10_000,
):
    return ImageComparison(
        image=image,
        max_abs_probability=dp,
        mean_abs_probability=dp / 2,
        flipped_fraction=1 - iou,
        mask_iou=iou,
        dice=dice,
        threshold_jaccard=dice,
        reference_dice=reference_dice,
        reference_threshold_jaccard=reference_dice,
        finite=finite,
        empty=False,
        reference_empty=False,
        confident_pixels=confident_pixels,
        confident_flips=confident_flips,
    )


def test_rounding_near_the_threshold_alone_does_not_fail_fp16():
    # The old false alarm: an unsure lesion whose mask moves by 3% (IoU 0.97) although no pixel the
    # reference is sure of flips, and Dice against the truth is unchanged.
    parity = summarize("fp16", "fp16", [row("ISIC_0013306", iou=0.97), row("b"), row("c")], Tolerances())
    assert parity.passed and parity.min_mask_iou == pytest.approx(0.97)


def unchanged(count: int) -> list[ImageComparison]:
    """``count`` images on which the form agrees with the reference: enough of them make a mean judged."""
    return [row(f"ISIC_same_{index}") for index in range(count)]


def test_fp16_gate_names_the_rule_the_image_and_the_number():
    rows = [row("ISIC_1"), row("ISIC_2", confident_flips=120), *unchanged(MEAN_RULES_MIN_IMAGES - 2)]
    parity = summarize("engine", "fp16", rows, Tolerances())
    assert not parity.passed and parity.max_image_confident_flip_image == "ISIC_2"
    assert "engine: confident pixels flipped in one image: 0.0120 on ISIC_2 > 0.005" in parity.breaches
    assert any(
        message.startswith("engine: confident pixels flipped (|p - threshold| >= 0.1): 0.00060 of all")
        for message in parity.breaches
    )


def test_one_image_that_got_worse_fails_and_is_named():
    rows = [row("a"), row("b", dice=0.72, reference_dice=0.80), row("c")]
    parity = summarize("fp16", "fp16", rows, Tolerances(fp16_abs_delta_dice=1.0, fp16_abs_delta_threshold_jaccard=1.0))
    assert parity.breaches == ["fp16: Dice lost on one image 0.0800 on b > 0.02"]
    assert summarize(
        "int8", "int8", rows, Tolerances(int8_abs_delta_dice=1.0, int8_abs_delta_threshold_jaccard=1.0)
    ).passed


def test_int8_gate_on_dice_change_and_nan():
    rows = [
        row("a", 0.99, dice=0.80),
        row("b", 0.99, dice=0.55, reference_dice=0.80, finite=False),
        *unchanged(MEAN_RULES_MIN_IMAGES - 2),
    ]
    parity = summarize("int8", "int8", rows, Tolerances())
    assert "int8: |delta Dice| against the truth 0.0125 (largest change -0.2500 on b) > 0.005" in parity.breaches
    assert "int8: |delta thresholded Jaccard| against the truth 0.0125 > 0.01" in parity.breaches
    assert parity.nonfinite_images == ["b"] and parity.breaches[0].startswith("int8: NaN or Inf")
    assert parity.unjudged == []
    assert summarize("int8", "int8", [row("a", 0.99, confident_flips=15)], Tolerances()).passed  # 0.0015 <= 0.002


def test_a_rule_on_a_mean_never_judges_a_handful_of_images_and_says_so():
    # Two images that each lose a little Dice: a mean of 0.04, far over the INT8 rule of 0.005. From a
    # handful of images rounding on one of them decides such a mean, so it is reported, not judged...
    few = [row("a", dice=0.76, reference_dice=0.80), row("b", dice=0.76, reference_dice=0.80)]
    parity = summarize("int8", "int8", few, Tolerances())
    assert parity.passed and parity.delta_dice == pytest.approx(-0.04)
    assert len(parity.unjudged) == 1 and "2 parity image(s)" in parity.unjudged[0]
    assert f"at least {MEAN_RULES_MIN_IMAGES}" in parity.unjudged[0] and "--data DIR" in parity.unjudged[0]
    # ...while the per-image rules judge any number of images...
    worse = summarize("int8", "int8", [row("a", dice=0.60, reference_dice=0.80)], Tolerances())
    assert worse.breaches == ["int8: Dice lost on one image 0.2000 on a > 0.1"]
    # ...and from MEAN_RULES_MIN_IMAGES images on, the same shift in the mean fails.
    many = [row(f"ISIC_{index}", dice=0.76, reference_dice=0.80) for index in range(MEAN_RULES_MIN_IMAGES)]
    judged = summarize("int8", "int8", many, Tolerances())
    assert not judged.passed and judged.unjudged == []
    assert any(message.startswith("int8: |delta Dice| against the truth 0.0400") for message in judged.breaches)
    assert summarize("onnx", "fp32", few, Tolerances()).unjudged == []  # fp32 is judged on probability alone


def test_fp32_gate_is_on_probability():
    assert summarize("onnx", "fp32", [row("a", dp=5e-5)], Tolerances()).passed
    failed = summarize("onnx", "fp32", [row("a", dp=5e-5), row("b", dp=0.02)], Tolerances())
    assert failed.breaches == ["onnx: max |delta probability| 0.02 > 0.0001 on b"]


def test_a_mask_shifted_by_a_few_pixels_fails_on_confident_pixels():
    # A form whose mask sits 4 px off on every image: pixels near the threshold may move, but these are sure ones.
    height, width = 256, 256
    rows_, columns = np.mgrid[0:height, 0:width]
    distance = np.hypot(rows_ - 128, columns - 128)
    reference = 1 / (1 + np.exp((distance - 60) / 4))  # a confident disc, a soft 60 px edge
    shifted = np.roll(reference, 4, axis=1)
    truth = distance < 60
    comparison = compare_image(
        "ISIC_shift",
        reference.astype(np.float32),
        reference > 0.5,
        shifted.astype(np.float32),
        shifted > 0.5,
        truth,
        threshold=0.5,
        margin=0.1,
    )
    assert comparison.confident_flips > 0
    for precision in ("fp16", "int8"):
        parity = summarize(precision, precision, [comparison] * MEAN_RULES_MIN_IMAGES, Tolerances())
        assert not parity.passed and any("confident pixels flipped" in m for m in parity.breaches), parity.breaches


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
    assert select_forms() == (("onnx", "fp16", "int8", "int8-trt", "engine", "engine-int8"), frozenset())
    assert select_forms(fp16=True) == (("onnx", "fp16", "engine"), frozenset())
    # The INT8 engine is built from the symmetric S8S8 ONNX, not from the CPU's U8 one.
    assert select_forms(["engine-int8"]) == (("onnx", "int8-trt", "engine-int8"), frozenset({"engine-int8"}))
    assert select_forms(int8=True) == (("onnx", "int8", "int8-trt", "engine-int8"), frozenset())
    assert select_forms(["int8-trt"]) == (("onnx", "int8-trt"), frozenset({"int8-trt"}))
    with pytest.raises(ExportError, match="unknown format"):
        select_forms(["tflite"])


def test_engine_file_is_named_by_tensorrt_gpu_and_precision():
    orin = Gpu("Orin", 8, 7)
    assert engine_filename("model", "10.3.0.30", orin, "fp16") == "model.trt10.3.sm87-orin.fp16.engine"
    assert timing_cache_filename("model", "10.3.0.30", orin) == "model.trt10.3.sm87-orin.timing.cache"
    assert sidecar_path(Path("/m/model.trt10.3.sm87-orin.fp16.engine")) == Path(
        "/m/model.trt10.3.sm87-orin.fp16.engine.json"
    )
    assert orin.has_fast_fp16 and not Gpu("GTX 1080", 6, 1).has_fast_fp16


def test_two_gpus_of_one_compute_capability_get_two_engine_names():
    rtx, l4 = Gpu("NVIDIA GeForce RTX 4090", 8, 9), Gpu("NVIDIA L4", 8, 9)
    names = {engine_filename("model", "10.12.0.36", gpu, "fp16") for gpu in (rtx, l4)}
    assert names == {"model.trt10.12.sm89-geforce-rtx-4090.fp16.engine", "model.trt10.12.sm89-l4.fp16.engine"}
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3" and gpu_slug("???") == "gpu"
    assert len(gpu_slug("NVIDIA " + "Very Long Name " * 8)) <= 32


@pytest.mark.parametrize(
    ("version", "strongly_typed"),
    [
        ("10.0.1.6", False),
        ("10.3.0.30", False),  # JetPack 6
        ("10.11.0.33", False),
        ("10.12.0.36", True),
        ("10.13.3.9", True),
        ("11.0.0.12", True),  # no weak typing at all
    ],
)
def test_the_tensorrt_version_chooses_strong_or_weak_typing(version: str, strongly_typed: bool):
    assert builds_strongly_typed(version) is strongly_typed


def failed(*breaches: str) -> FormResult:
    return FormResult("x", "fp16", path=Path("x"), parity=SimpleNamespace(passed=False, breaches=list(breaches)))


def test_fp32_norm_retries_rebuild_a_strongly_typed_engine_and_its_fp16_onnx_together():
    passed = FormResult("x", "fp16", path=Path("x"), parity=SimpleNamespace(passed=True, breaches=[]))
    engine_failed = {"fp16": passed, "engine": failed("engine: Dice")}
    assert fp32_norm_retries(engine_failed, engine_from_fp16_onnx=False) == {
        "engine": "it failed parity (engine: Dice)"
    }
    assert fp32_norm_retries(engine_failed, engine_from_fp16_onnx=True) == {
        "engine": "it failed parity (engine: Dice)",
        "fp16": "the strongly typed engine built from it failed parity (engine: Dice)",
    }
    fp16_failed = {"fp16": failed("fp16: flips"), "engine": passed}
    assert fp32_norm_retries(fp16_failed, engine_from_fp16_onnx=False) == {"fp16": "it failed parity (fp16: flips)"}
    assert fp32_norm_retries(fp16_failed, engine_from_fp16_onnx=True) == {
        "fp16": "it failed parity (fp16: flips)",
        "engine": "the FP16 ONNX it is built from (strongly typed) was rebuilt",
    }
    assert fp32_norm_retries({"fp16": passed, "engine": passed}, engine_from_fp16_onnx=True) == {}


# --- on a GPU host with TensorRT ------------------------------------------------------------------

needs_engine = pytest.mark.skipif(
    engine_unavailable_reason() is not None, reason=f"no TensorRT engine build here: {engine_unavailable_reason()}"
)


@pytest.mark.gpu
@needs_engine
def test_engine_build_naming_and_sidecar(trained_run_dir: Path, tmp_path: Path):
    import tensorrt as trt

    from edgeseg.core.card import load_card
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.export.tensorrt_export import build_engine, gpu_properties
    from edgeseg.runtime.loaders import read_card, sha256_of
    from edgeseg.train.network import load_model

    model, card = load_model(trained_run_dir)
    onnx_path = export_onnx(model, card, tmp_path / "model.onnx")
    if builds_strongly_typed(trt.__version__):
        from edgeseg.export.fp16_export import export_fp16

        onnx_path = export_fp16(onnx_path, card, tmp_path / "model.fp16.onnx")
    engine = build_engine(onnx_path, card, tmp_path, precision="fp16", workspace_mib=512)
    gpu = gpu_properties()
    assert engine.name == engine_filename("model", trt.__version__, gpu, "fp16")
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_sha256"] == sha256_of(onnx_path) and sidecar["engine_sha256"] == sha256_of(engine)
    assert sidecar["onnx_file"] == onnx_path.name
    assert sidecar["precision"] == "fp16" and sidecar["compute_capability"] == gpu.compute_capability
    assert sidecar["card"] == load_card(trained_run_dir).to_dict() and read_card(engine) == card
    assert list(tmp_path.glob("*.timing.cache"))  # kept for the next build


@pytest.mark.gpu
@needs_engine
def test_engine_parity(trained_run_dir: Path, synthetic_dir: Path, tmp_path: Path):
    from click.testing import CliRunner

    from edgeseg.cli import main

    result = CliRunner().invoke(
        main,
        [
            "export",
            str(trained_run_dir),
            "--out",
            str(tmp_path),
            "--format",
            "engine",
            "--parity-data",
            str(synthetic_dir),
            "--latency-runs",
            "2",
        ],
        catch_exceptions=False,
    )
    report = json.loads((tmp_path / "export-report.json").read_text())
    engine = next(form for form in report["forms"] if form["name"] == "engine")
    assert engine["status"] == "built", engine["reason"]
    assert engine["passed"] is True and result.exit_code == 0, result.output
