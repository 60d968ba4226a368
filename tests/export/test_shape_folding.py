"""The "same" padding's shape arithmetic folded to constants before INT8 quantization (export/shape_folding.py).

onnxruntime < 1.31 (every CUDA 12 build, JetPack's) cannot fold it and quantized it: the INT8 form of
the default model failed at run time there. Checked here on the tiny model's TF-EfficientNet encoder,
whatever onnxruntime this environment has.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgeseg.export.shape_folding import fold_shape_arithmetic, shape_only_tensors


def run(path: Path, batch: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": batch})[0]


def test_the_padding_arithmetic_becomes_constants_and_the_outputs_stay_the_same(tiny_onnx: Path, tmp_path: Path):
    before = Counter(node.op_type for node in onnx.load(str(tiny_onnx)).graph.node)
    assert before["Shape"] and before["Ceil"] and before["Pad"], before  # timm's "same" padding, computed at run time
    folded = fold_shape_arithmetic(tiny_onnx, tmp_path / "folded.onnx")
    proto = onnx.load(str(folded))
    after = Counter(node.op_type for node in proto.graph.node)
    assert folded != tiny_onnx and not after["Shape"] and not after["Ceil"] and after["Pad"] == before["Pad"], after
    assert shape_only_tensors(proto.graph) == set()  # nothing left to fold
    used = {name for node in proto.graph.node for name in node.input}
    assert all(initializer.name in used for initializer in proto.graph.initializer)
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, batch), run(tiny_onnx, batch))


def test_a_model_without_static_input_or_without_shape_arithmetic_is_left_as_it_is(tiny_onnx: Path, tmp_path: Path):
    proto = onnx.load(str(tiny_onnx))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(proto, str(dynamic))
    assert fold_shape_arithmetic(dynamic, tmp_path / "unused.onnx") == dynamic
    folded = fold_shape_arithmetic(tiny_onnx, tmp_path / "folded.onnx")
    assert fold_shape_arithmetic(folded, tmp_path / "again.onnx") == folded
    assert not (tmp_path / "unused.onnx").exists() and not (tmp_path / "again.onnx").exists()


def test_the_int8_form_puts_no_quantization_on_shapes_or_pads(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    from edgeseg.core.data import discover_samples
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.loaders import read_card

    images = [sample.image for sample in discover_samples(synthetic_dir, split="train")][:4]
    proto = onnx.load(str(export_int8(tiny_onnx, read_card(tiny_onnx), tmp_path / "model.int8.onnx", images)))
    producers = {output: node for node in proto.graph.node for output in node.output}
    quantized = {
        node.op_type
        for node in proto.graph.node
        if any(producers.get(name) is not None and producers[name].op_type == "DequantizeLinear" for name in node.input)
    }
    assert "Conv" in quantized and not quantized & {"Shape", "Ceil", "Sub", "Pad", "Cast"}, quantized
    batch = np.zeros((1, 3, 64, 64), np.float32)
    assert run(tmp_path / "model.int8.onnx", batch).shape == (1, 1, 64, 64)
