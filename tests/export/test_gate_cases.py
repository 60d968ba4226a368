"""The parity gate stays a gate: forms that really lost accuracy fail it, each with its rule named.

Built on the tiny trained model of conftest.py, through the same run_parity the export runs. Its
decision margins are soft, so normal INT8 is judged with the relaxed tolerances test_export.py uses;
the broken forms below fail even those.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.data import discover_samples
from edgeseg.export.parity import Tolerances, run_parity
from edgeseg.loading.open import open_model

onnx = pytest.importorskip("onnx")

RELAXED_INT8 = Tolerances(
    int8_confident_flips=0.05,
    int8_image_confident_flips=0.2,
    int8_abs_delta_dice=0.05,
    int8_abs_delta_threshold_jaccard=0.2,
    int8_image_dice_loss=0.3,
)


@pytest.fixture(scope="module")
def fp32_onnx(trained_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.train.network import load_model

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
    trained_run_dir: Path, fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path
):
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
    trained_run_dir: Path, fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path
):
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.loaders import read_card

    card = read_card(fp32_onnx)
    val = discover_samples(synthetic_dir, split="val")
    train = [sample.image for sample in discover_samples(synthetic_dir, split="train")]
    proper = export_int8(fp32_onnx, card, tmp_path / "proper.int8.onnx", train)
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((96, 96, 3), np.uint8))
    # Every layer INT8: with the leading layers float32 (export's default) this tiny model survives even
    # a black calibration, and the test is of the gate, not of the quantizer.
    broken = export_int8(fp32_onnx, card, tmp_path / "black.int8.onnx", [black], float_until_stride=1)

    assert parity_of(trained_run_dir, proper, "int8", RELAXED_INT8, val).passed
    parity = parity_of(trained_run_dir, broken, "int8", RELAXED_INT8, val)
    assert not parity.passed, parity
    assert any(
        rule in message for message in parity.breaches for rule in ("confident pixels flipped", "Dice", "NaN")
    ), parity.breaches


def test_symmetric_int8_has_only_zero_points_of_zero(fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    """TensorRT's ONNX parser takes only symmetric Q/DQ: the "s8" form must have no other zero point."""
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.loaders import read_card

    card = read_card(fp32_onnx)
    images = [sample.image for sample in discover_samples(synthetic_dir, split="train")[:4]]
    zero_points = {}
    for activations in ("u8", "s8"):
        proto = onnx.load(
            str(export_int8(fp32_onnx, card, tmp_path / f"{activations}.onnx", images, activations=activations))
        )
        initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
        zero_points[activations] = [
            initializers[node.input[2]]
            for node in proto.graph.node
            if node.op_type == "QuantizeLinear" and len(node.input) > 2
        ]
    assert zero_points["s8"] and all(point.dtype == np.int8 and not point.any() for point in zero_points["s8"])
    assert any(point.dtype == np.uint8 and point.any() for point in zero_points["u8"])  # asymmetric activations


# (c) An FP16 form whose normalisation overflows. The decoder's GroupNorms get inputs 250x larger
# (their convolutions scaled: the norm divides the scale away, so the model predicts as before), and
# the FP16 form's norms compute as a naive FP16 kernel does (naive_fp16_norm.py says why the CPU's own
# kernel cannot show this). The export must fail that form and rescue it by its FP32-norm rebuild.
# Unscaled, on every synthetic image, each norm's largest |x - mean| is at least 1.9 and no |x| passes 79:
# 250x makes every norm overflow float16 in (x - mean)^2 while x itself (< 20000) still fits in float16.
NORM_INPUT_SCALE = 250.0


def scaled_norm_inputs_copy(run_dir: Path, path: Path, scale: float) -> Path:
    """A copy of the run whose every convolution that feeds a GroupNorm is ``scale`` times larger."""
    import torch

    from edgeseg.core.card import save_card
    from edgeseg.train.network import WEIGHTS_FILENAME, load_model, save_weights

    model, card = load_model(run_dir)
    pairs = [
        (conv, norm)
        for block in model.modules()
        if isinstance(block, torch.nn.Sequential)
        for conv, norm in pairwise(block)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.GroupNorm)
    ]
    assert pairs, "no convolution feeds a GroupNorm any more: this test needs another way to grow them"
    with torch.no_grad():
        for conv, _ in pairs:
            conv.weight *= scale
            if conv.bias is not None:
                conv.bias *= scale
    path.mkdir()
    save_weights(model, path / WEIGHTS_FILENAME)
    save_card(card, path)
    return path


def run_onnx(path: Path, batch: np.ndarray, extra_outputs: tuple[str, ...] = ()) -> list[np.ndarray]:
    """The model's output, then the named intermediate tensors, on onnxruntime's CPU provider."""
    import onnxruntime as ort

    proto = onnx.load(str(path))
    proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra_outputs)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([proto.graph.output[0].name, *extra_outputs], {proto.graph.input[0].name: batch})


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def instance_norm_model(path: Path, in_float32: bool) -> Path:
    """A norm of float16 data, in float16 or (``in_float32``) between casts, as --keep-norm-fp32 leaves it."""
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float32 if in_float32 else np.float16
    x, y = ("x32", "y32") if in_float32 else ("x", "y")
    nodes = [helper.make_node("InstanceNormalization", [x, "scale", "bias"], [y], epsilon=1e-5)]
    if in_float32:
        nodes = [
            helper.make_node("Cast", ["x"], [x], to=TensorProto.FLOAT),
            *nodes,
            helper.make_node("Cast", [y], ["y"], to=TensorProto.FLOAT16),
        ]
    graph = helper.make_graph(
        nodes,
        "norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, 256])],
        [numpy_helper.from_array(np.ones(4, dtype), "scale"), numpy_helper.from_array(np.zeros(4, dtype), "bias")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def test_naive_fp16_norm_overflows_where_the_cpu_kernel_and_the_fp32_norm_do_not(tmp_path: Path):
    """The emulation is honest: onnxruntime's own float16 norm is right on these inputs, the naive one is not."""
    from .naive_fp16_norm import decompose_fp16_instance_norms

    x = np.random.default_rng(0).normal(0, 1000, (1, 4, 256)).astype(np.float16)  # spread >> 256
    expected = (x - x.mean(-1, keepdims=True, dtype=np.float64)) / x.std(-1, keepdims=True, dtype=np.float64)
    for in_float32 in (False, True):
        model = instance_norm_model(tmp_path / f"norm-{in_float32}.onnx", in_float32)
        kernel = run_onnx(model, x)[0]
        np.testing.assert_allclose(kernel, expected, atol=0.01)  # the CPU kernel computes inside in float32
        proto = onnx.load(str(model))
        assert decompose_fp16_instance_norms(proto) == (0 if in_float32 else 1)
        onnx.save(proto, str(model))
        naive = run_onnx(model, x)[0]
        if in_float32:
            np.testing.assert_array_equal(naive, kernel)
        else:
            assert not np.isfinite(naive).all() or np.abs(naive - expected).max() > 0.5, naive


@pytest.mark.slow
def test_fp16_norm_overflow_fails_the_gate_and_the_fp32_norm_rebuild_rescues_it(
    trained_run_dir: Path, fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from click.testing import CliRunner

    from edgeseg.cli import main
    from edgeseg.core.files import read_image
    from edgeseg.core.preprocess import preprocess
    from edgeseg.export import export_run, fp16_export
    from edgeseg.runtime.loaders import read_card

    from .naive_fp16_norm import with_naive_fp16_norms

    run = scaled_norm_inputs_copy(trained_run_dir, tmp_path / "run", NORM_INPUT_SCALE)
    monkeypatch.setattr(fp16_export, "export_fp16", with_naive_fp16_norms(fp16_export.export_fp16))

    def export(out: Path):
        result = CliRunner().invoke(
            main,
            [
                "export",
                str(run),
                "--format",
                "fp16",
                "--out",
                str(out),
                "--parity-data",
                str(synthetic_dir),
                "--latency-runs",
                "1",
            ],
            catch_exceptions=False,
        )
        report = json.loads((out / "export-report.json").read_text())
        return result, next(row for row in report["forms"] if row["name"] == "fp16")

    rescued, row = export(tmp_path / "rescued")
    # The premise, on every parity image: in each norm some |x - mean| passes 256 (its square, float16's
    # 65504), while |x| stays well inside float16; and the probabilities are the unscaled model's.
    norms = tuple(
        node.input[0]
        for node in onnx.load(str(tmp_path / "rescued" / "model.onnx")).graph.node
        if node.op_type == "InstanceNormalization"
    )
    card = read_card(fp32_onnx)
    for sample in discover_samples(synthetic_dir, split="val"):
        batch = preprocess(read_image(sample.image), card)
        probability, *norm_inputs = run_onnx(tmp_path / "rescued" / "model.onnx", batch, norms)
        centred = [np.abs(values - values.mean(axis=-1, keepdims=True)).max() for values in norm_inputs]
        assert min(centred) > 256 and max(np.abs(values).max() for values in norm_inputs) < 65504 / 2, centred
        np.testing.assert_allclose(probability, run_onnx(fp32_onnx, batch)[0], atol=1e-3)

    # The overflowed variance is inf, so each norm gives its bias alone: finite, and wrong.
    first_verdict = (
        "fp16: rebuilding with normalisation and Resize layers in FP32: it failed parity "
        "(fp16: confident pixels flipped"
    )
    assert first_verdict in rescued.output, rescued.output
    assert rescued.exit_code == 0, rescued.output
    assert row["status"] == "built" and row["passed"] is True, row
    assert any(note.startswith("rebuilt with normalisation and Resize layers kept in FP32") for note in row["notes"])
    assert "InstanceNormalization" in op_types(tmp_path / "rescued" / "model.fp16.onnx")  # not decomposed: kept in FP32

    # Without the rebuild the export fails, on the same rule.
    monkeypatch.setattr(export_run, "retry_with_fp32_norms", lambda *args: None)
    unrescued, first = export(tmp_path / "unrescued")
    assert unrescued.exit_code == 1 and first["passed"] is False
    assert "InstanceNormalization" not in op_types(tmp_path / "unrescued" / "model.fp16.onnx")
    assert "fp16: confident pixels flipped" in unrescued.output, unrescued.output
    assert first["parity"]["nonfinite_images"] == [], first["parity"]


def test_int8_keeps_the_layers_down_to_a_quarter_of_the_input_float(
    fp32_onnx: Path, synthetic_dir: Path, tmp_path: Path
):
    """The stem and first blocks stay float32 (their rounding flipped a real model's mask); the rest is INT8."""
    from edgeseg.export.int8_export import FLOAT_UNTIL_STRIDE, export_int8
    from edgeseg.runtime.loaders import read_card

    card = read_card(fp32_onnx)
    images = [sample.image for sample in discover_samples(synthetic_dir, split="train")[:4]]
    height = card.input_size[0]

    def conv_heights_by_precision(proto) -> dict[str, list[int]]:
        dequantized = {node.output[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
        graph = onnx.shape_inference.infer_shapes(proto).graph
        heights = {
            value.name: value.type.tensor_type.shape.dim[2].dim_value
            for value in graph.value_info
            if len(value.type.tensor_type.shape.dim) == 4
        }
        convs = [node for node in graph.node if node.op_type == "Conv"]
        return {
            "float": [heights[node.output[0]] for node in convs if node.input[1] not in dequantized],
            "int8": [heights[node.output[0]] for node in convs if node.input[1] in dequantized],
        }

    default = conv_heights_by_precision(onnx.load(str(export_int8(fp32_onnx, card, tmp_path / "a.onnx", images))))
    assert default["float"] and all(conv_height * FLOAT_UNTIL_STRIDE >= height for conv_height in default["float"])
    assert any(conv_height * FLOAT_UNTIL_STRIDE < height for conv_height in default["int8"])
    every_layer = conv_heights_by_precision(
        onnx.load(str(export_int8(fp32_onnx, card, tmp_path / "b.onnx", images, float_until_stride=1)))
    )
    assert every_layer["float"] == [] and len(every_layer["int8"]) == len(default["int8"]) + len(default["float"])
