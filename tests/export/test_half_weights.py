"""--half-weights: an fp32 ONNX whose weights are stored as float16, for a model under a size limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseg.runtime.loaders import read_onnx_info

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgeseg.export.half_weights import (
    FLOAT16_MAX,
    MIN_ELEMENTS,
    has_float16_weights,
    restore_float32_weights,
    store_weights_float16,
)


def run_onnx(proto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def float32_weights(proto) -> dict[str, np.ndarray]:
    return {
        tensor.name: onnx.numpy_helper.to_array(tensor)
        for tensor in proto.graph.initializer
        if tensor.data_type == onnx.TensorProto.FLOAT
    }


@pytest.fixture(scope="module")
def image(tiny_card) -> np.ndarray:
    height, width = tiny_card.input_size
    return np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)


def test_stored_weights_halve_the_file_and_compute_in_float32_within_float16_rounding(tiny_onnx: Path, image):
    original = onnx.load(str(tiny_onnx))
    half = onnx.load(str(tiny_onnx))
    assert store_weights_float16(half) > 0
    onnx.checker.check_model(half, full_check=True)
    assert has_float16_weights(half) and not has_float16_weights(original)
    assert half.ByteSize() < 0.6 * original.ByteSize()
    assert run_onnx(half, image).dtype == np.float32
    assert np.abs(run_onnx(half, image) - run_onnx(original, image)).max() < 0.02  # logits
    assert not np.array_equal(run_onnx(half, image), run_onnx(original, image))  # the weights really are rounded


def test_restoring_gives_float32_initializers_of_the_rounded_values_and_the_same_outputs(tiny_onnx: Path, image):
    original = onnx.load(str(tiny_onnx))
    half = onnx.load(str(tiny_onnx))
    store_weights_float16(half)
    restored = onnx.load_from_string(half.SerializeToString())
    restore_float32_weights(restored)
    onnx.checker.check_model(restored, full_check=True)
    assert not has_float16_weights(restored)
    assert {tensor.data_type for tensor in restored.graph.initializer} <= {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
    }
    assert not any(node.op_type == "Cast" and node.input[0].endswith("__float16") for node in restored.graph.node)
    rounded, exact = float32_weights(restored), float32_weights(original)
    assert rounded.keys() == exact.keys()
    for name, values in exact.items():
        expected = values.astype(np.float16).astype(np.float32) if values.size >= MIN_ELEMENTS else values
        np.testing.assert_array_equal(rounded[name], expected, err_msg=name)
    np.testing.assert_array_equal(run_onnx(restored, image), run_onnx(half, image))


def test_a_weight_beyond_float16_range_stays_float32(tiny_onnx: Path):
    proto = onnx.load(str(tiny_onnx))
    big = next(tensor for tensor in proto.graph.initializer if onnx.numpy_helper.to_array(tensor).size >= 1024)
    values = onnx.numpy_helper.to_array(big).copy()
    values.flat[0] = 2 * FLOAT16_MAX
    big.CopyFrom(onnx.numpy_helper.from_array(values, big.name))
    store_weights_float16(proto)
    assert float32_weights(proto)[big.name].flat[0] == 2 * FLOAT16_MAX


def test_the_runtime_reads_a_half_weight_file_as_fp32(tiny_onnx: Path, tmp_path: Path):
    proto = onnx.load(str(tiny_onnx))
    store_weights_float16(proto)
    onnx.save(proto, str(tmp_path / "model.onnx"))
    assert read_onnx_info(tmp_path / "model.onnx").precision == "fp32"
