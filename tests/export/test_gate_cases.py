"""The parity gate stays a gate: forms that really lost accuracy fail it, each with its rule named.

Built on the tiny trained model of conftest.py, through the same run_parity the export runs. Its
decision margins are soft, so normal INT8 is judged with the relaxed tolerances test_export.py uses;
the broken forms below fail even those.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.data import discover_samples
from edgeseg.evaluate.models import open_model
from edgeseg.export.parity import Tolerances, run_parity

onnx = pytest.importorskip("onnx")

RELAXED_INT8 = Tolerances(int8_confident_flips=0.05, int8_image_confident_flips=0.2, int8_abs_delta_dice=0.05,
                          int8_abs_delta_threshold_jaccard=0.2, int8_image_dice_loss=0.3)


@pytest.fixture(scope="module")
def fp32_onnx(trained_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.train.model import load_model

    model, card = load_model(trained_run_dir)
    return export_onnx(model, card, tmp_path_factory.mktemp("gate") / "model.onnx")


def parity_of(run_dir: Path, form: Path, precision: str, tolerances: Tolerances, samples):
    with open_model(run_dir, "torch-cpu") as reference, open_model(form, "onnxruntime-cpu") as candidate:
        return run_parity(reference, {"form": (candidate, precision)}, samples, tolerances, progress=False)["form"]


def perturbed_copy(source: Path, path: Path, scale: float) -> Path:
    """The ONNX with noise of ``scale`` times each weight tensor's spread added to its every conv weight."""
    proto = onnx.load(str(source))
    rng = np.random.default_rng(0)
    for tensor in proto.graph.initializer:
        values = onnx.numpy_helper.to_array(tensor)
        if values.ndim == 4:
            noisy = values + rng.normal(0, scale * values.std(), values.shape).astype(values.dtype)
            tensor.CopyFrom(onnx.numpy_helper.from_array(noisy, tensor.name))
    onnx.save(proto, str(path))
    return path


@pytest.mark.slow
def test_weights_perturbed_until_dice_drops_about_001_fail_every_reduced_precision(
        trained_run_dir: Path, fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    samples = discover_samples(synthetic_dir)  # all 24 pairs: more images, steadier Dice
    for scale in (0.02, 0.04, 0.08, 0.16, 0.32):
        form = perturbed_copy(fp32_onnx, tmp_path / f"perturbed-{scale}.onnx", scale)
        parity = parity_of(trained_run_dir, form, "fp16", Tolerances(), samples)
        if abs(parity.delta_dice) >= 0.008:
            break
    else:
        pytest.fail("no perturbation moved Dice by 0.008: the test model is too robust for this test")
    assert abs(parity.delta_dice) < 0.05, "the smallest perturbation that moves Dice moved it far more than 0.01"
    assert not parity.passed and any("Dice" in message for message in parity.breaches), parity.breaches
    as_int8 = parity_of(trained_run_dir, form, "int8", Tolerances(), samples)
    assert not as_int8.passed, f"scale {scale}: dDice {as_int8.delta_dice:+.4f} passed the INT8 gate"


@pytest.mark.slow
def test_int8_calibrated_on_one_black_image_fails_where_proper_calibration_passes(
        trained_run_dir: Path, fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.model_file import read_card

    card = read_card(fp32_onnx)
    val = discover_samples(synthetic_dir, split="val")
    train = [sample.image for sample in discover_samples(synthetic_dir, split="train")]
    proper = export_int8(fp32_onnx, card, tmp_path / "proper.int8.onnx", train)
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((96, 96, 3), np.uint8))
    broken = export_int8(fp32_onnx, card, tmp_path / "black.int8.onnx", [black])

    assert parity_of(trained_run_dir, proper, "int8", RELAXED_INT8, val).passed
    parity = parity_of(trained_run_dir, broken, "int8", RELAXED_INT8, val)
    assert not parity.passed, parity
    assert any(rule in message for message in parity.breaches
               for rule in ("confident pixels flipped", "Dice", "NaN")), parity.breaches


def test_symmetric_int8_has_only_zero_points_of_zero(fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    """TensorRT's ONNX parser takes only symmetric Q/DQ: the "s8" form must have no other zero point."""
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.model_file import read_card

    card = read_card(fp32_onnx)
    images = [sample.image for sample in discover_samples(synthetic_dir, split="train")[:4]]
    zero_points = {}
    for activations in ("u8", "s8"):
        proto = onnx.load(str(export_int8(fp32_onnx, card, tmp_path / f"{activations}.onnx", images,
                                          activations=activations)))
        initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
        zero_points[activations] = [initializers[node.input[2]] for node in proto.graph.node
                                    if node.op_type == "QuantizeLinear" and len(node.input) > 2]
    assert zero_points["s8"] and all(point.dtype == np.int8 and not point.any() for point in zero_points["s8"])
    assert any(point.dtype == np.uint8 and point.any() for point in zero_points["u8"])  # asymmetric activations
