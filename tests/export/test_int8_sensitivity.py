"""The INT8 sensitivity pass: it finds the block whose quantization hurts and keeps only that one float32.

The model is a two-block ONNX built here: block "a" (a convolution and its ReLU) quantizes harmlessly; block
"b" (a 1x1 convolution) has, in its one output channel, a weight a thousand times the others on an input
channel that is always zero. Float32 never sees that weight; INT8's per-channel scale is set by it, so every
other weight of the channel rounds to zero and the output goes flat.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.export.int8_sensitivity import (
    BlockSensitivity,
    block_name,
    merge_neighbours,
    pick_float_blocks,
    quantization_blocks,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CARD = ModelCard(input_size=(32, 32))


def two_block_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a_weight = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    a_weight[3] = 0  # channel 3: zero weights and a negative bias, so always 0 after the ReLU
    a_bias = np.array([0.1, 0.0, -0.1, -1.0], np.float32)
    b_weight = np.array([0.8, -0.6, 0.7, 1000.0], np.float32).reshape(1, 4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["image", "a_weight", "a_bias"], ["a_out"], name="/a/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a_out"], ["a_act"], name="/a/act/Relu"),
        helper.make_node("Conv", ["a_act", "b_weight", "b_bias"], ["logits"], name="/b/conv/Conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "two-blocks",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 32, 32])],
        [
            numpy_helper.from_array(a_weight, "a_weight"),
            numpy_helper.from_array(a_bias, "a_bias"),
            numpy_helper.from_array(b_weight, "b_weight"),
            numpy_helper.from_array(np.zeros(1, np.float32), "b_bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(1)
    paths = []
    for number in range(6):
        path = folder / f"image{number}.png"
        cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 0))
        paths.append(path)
    return paths


def weights_by_precision(proto) -> dict[str, bool]:
    """Each Conv's name -> whether its weight reaches it through a DequantizeLinear (INT8) or as float32."""
    dequantized = {node.output[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    return {node.name: node.input[1] in dequantized for node in proto.graph.node if node.op_type == "Conv"}


def test_the_pass_keeps_float_only_the_block_whose_quantization_hurts(tmp_path: Path, images: list[Path]):
    from edgeseg.export.int8_export import export_int8, read_float_choice

    source = two_block_onnx(tmp_path / "model.onnx")
    path = export_int8(source, CARD, tmp_path / "model.int8.onnx", images, measure_float_blocks=True)

    choice = read_float_choice(path)  # the file carries the choice
    assert choice["rule"] == "measured" and choice["float_blocks"] == ["b/conv"], choice
    sensitivity = {row["block"]: row["rms"] for row in choice["blocks"]}
    assert set(sensitivity) == {"a/conv", "b/conv"}  # the ReLU is measured with its convolution
    assert sensitivity["b/conv"] > 10 * sensitivity["a/conv"], sensitivity
    assert choice["chosen_rms"] < choice["all_int8_rms"] / 3, choice
    assert weights_by_precision(onnx.load(str(path))) == {"/a/conv/Conv": True, "/b/conv/Conv": False}


def test_without_the_pass_the_file_records_the_stride_rule(tmp_path: Path, images: list[Path]):
    from edgeseg.export.int8_export import export_int8, float_choice_note, read_float_choice

    source = two_block_onnx(tmp_path / "model.onnx")
    path = export_int8(source, CARD, tmp_path / "model.int8.onnx", images, float_until_stride=1)

    choice = read_float_choice(path)
    assert choice == {"rule": "stride", "float_until_stride": 1, "float_nodes": 0}
    assert weights_by_precision(onnx.load(str(path))) == {"/a/conv/Conv": True, "/b/conv/Conv": True}
    assert float_choice_note(choice) == "layers kept float32: none, every layer is INT8"
    stride_rule = {"rule": "stride", "float_until_stride": 4, "float_nodes": 9}
    assert "leading ones, down to 1/4" in float_choice_note(stride_rule)


def test_pick_keeps_the_fewest_most_sensitive_blocks_that_leave_the_residual_share():
    ranked = [BlockSensitivity("small", (), 0.1), BlockSensitivity("big", (), 0.9), BlockSensitivity("mid", (), 0.4)]
    total = 0.1**2 + 0.9**2 + 0.4**2

    chosen, share = pick_float_blocks(ranked, residual_share=0.5)
    assert chosen == ["big"] and share == pytest.approx(((0.1**2 + 0.4**2) / total) ** 0.5)
    assert pick_float_blocks(ranked, residual_share=0.2)[0] == ["big", "mid"]
    assert pick_float_blocks(ranked, residual_share=0.0, max_blocks=2)[0] == ["big", "mid"]
    assert pick_float_blocks(ranked, residual_share=1.0) == ([], 1.0)
    assert pick_float_blocks([BlockSensitivity("none", (), 0.0)]) == ([], 0.0)  # nothing moves: nothing float


def test_blocks_follow_the_module_path_and_keep_each_layer_whole(tmp_path: Path):
    from onnx import TensorProto, helper

    def conv(name: str, source: str, out: str):
        return helper.make_node("Conv", [source, "w"], [out], name=name)

    nodes = [
        conv("/enc/stem/conv/Conv", "x", "t0"),
        helper.make_node("Relu", ["t0"], ["t1"], name="/enc/bn1/act/Relu"),
        conv("/enc/blocks.0/blocks.0.0/conv_dw/Conv", "t1", "t2"),
        conv("/enc/blocks.0/blocks.0.0/conv_pw/Conv", "t2", "t3"),
        helper.make_node("Add", ["t3", "t1"], ["t4"], name="/enc/blocks.0/blocks.0.0/Add"),
        conv("/head/conv/Conv", "t4", "y"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))

    blocks = quantization_blocks(tmp_path / "g.onnx", depth=3)
    assert blocks == {
        "enc/stem/conv": ["/enc/stem/conv/Conv", "/enc/bn1/act/Relu"],  # the activation stays with its convolution
        "enc/blocks.0/blocks.0.0": [
            "/enc/blocks.0/blocks.0.0/conv_dw/Conv",
            "/enc/blocks.0/blocks.0.0/conv_pw/Conv",
            "/enc/blocks.0/blocks.0.0/Add",
        ],
        "head/conv": ["/head/conv/Conv"],
    }
    assert list(quantization_blocks(tmp_path / "g.onnx", depth=3, max_blocks=2)) == [
        "enc/stem/conv .. enc/blocks.0/blocks.0.0",
        "head/conv",
    ]
    assert block_name("Conv_12") == "Conv_12" and block_name("/a/b/c/d/e/Conv", depth=2) == "a/b"
    assert merge_neighbours({"x": ["1"], "y": ["2"], "z": ["3"]}, 5) == {"x": ["1"], "y": ["2"], "z": ["3"]}


def test_the_export_builds_the_cpu_form_by_the_pass_and_notes_its_choice(tmp_path: Path, images: list[Path]):
    from edgeseg.export.export_run import FormResult, build_int8, int8_float_notes

    source = two_block_onnx(tmp_path / "model.onnx")
    path = build_int8("int8", source, CARD, tmp_path, images, progress=False)

    notes = int8_float_notes(FormResult("int8", "int8", path=path))
    assert len(notes) == 1 and "sensitivity pass" in notes[0] and "b/conv" in notes[0], notes
    assert int8_float_notes(FormResult("int8", "int8", status="failed", reason="boom")) == []


def test_an_onnxruntime_that_cannot_reuse_a_calibration_keeps_the_stride_rule_and_says_why(
    tmp_path: Path, images: list[Path], monkeypatch: pytest.MonkeyPatch
):
    from edgeseg.export import int8_export

    monkeypatch.setattr(int8_export, "calibration_reusable", lambda: False)
    source = two_block_onnx(tmp_path / "model.onnx")
    path = int8_export.export_int8(source, CARD, tmp_path / "model.int8.onnx", images, measure_float_blocks=True)

    choice = int8_export.read_float_choice(path)
    assert choice["rule"] == "stride" and "1.32" in choice["why"], choice
    assert "1.32" in int8_export.float_choice_note(choice)
