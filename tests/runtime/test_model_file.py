"""Reading the card from model files, and the errors for files the runtime cannot use."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from edgeseg.core.card import CardError, ModelCard
from edgeseg.runtime.loaders import (
    EngineInfo,
    RuntimeModelError,
    check_engine_host,
    precision_of,
    read_card,
    read_engine_info,
    sidecar_path,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper


def small_graph_model(
    op_type: str = "Relu", card: ModelCard | None = None, key: str = "edgeseg_card", graph_size: tuple | None = None
):
    """A one-node ONNX model made with onnx.helper; with ``card`` it carries an edgeseg card. Its input is
    ``graph_size`` (height, width; a name for a dynamic side), by default the card's size, as in an export."""
    if op_type == "QuantizeLinear":
        scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
        node = helper.make_node("QuantizeLinear", ["image", "scale"], ["logits"])
        output = helper.make_tensor_value_info("logits", TensorProto.UINT8, [1, 3, 4, 4])
        initializers = [scale]
    else:
        node = helper.make_node(op_type, ["image"], ["logits"])
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])
        initializers = []
    side = list(graph_size or (card.input_size if card is not None else (4, 4)))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *side])], [output], initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    if card is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, card.to_json()
    return model


def test_card_of_an_export_is_the_card_it_was_exported_with(tiny_onnx: Path, tiny_card: ModelCard) -> None:
    assert read_card(tiny_onnx) == tiny_card
    assert precision_of(tiny_onnx) == "fp32"


def test_foreign_onnx_is_refused_with_the_export_command(tmp_path: Path) -> None:
    path = tmp_path / "foreign.onnx"
    onnx.save(small_graph_model(), str(path))
    with pytest.raises(RuntimeModelError, match="not an edgeseg export") as error:
        read_card(path)
    assert str(path) in str(error.value) and "edgeseg export" in str(error.value)


def test_truncated_onnx_is_reported_as_corrupt(tmp_path: Path, tiny_onnx: Path) -> None:
    data = tiny_onnx.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeModelError, match="corrupt or truncated") as error:
        read_card(path)
    assert str(path) in str(error.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeModelError, match="no such model file"):
        read_card(tmp_path / "absent.onnx")


def test_unknown_card_schema_version_is_refused(tmp_path: Path, tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    for entry in model.metadata_props:
        if entry.key == "edgeseg_card":
            card = json.loads(entry.value)
            card["schema_version"] = 99
            entry.value = json.dumps(card)
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CardError, match="schema version 99"):
        read_card(path)


def test_precision_is_detected_from_the_graph(tmp_path: Path, tiny_card: ModelCard) -> None:
    quantized = tmp_path / "q.onnx"
    onnx.save(small_graph_model("QuantizeLinear", tiny_card), str(quantized))
    assert precision_of(quantized) == "int8"
    plain = tmp_path / "plain.onnx"
    onnx.save(small_graph_model("Relu", tiny_card), str(plain))
    assert precision_of(plain) == "fp32"


def test_fp16_export_is_detected(tmp_path: Path, tiny_onnx: Path) -> None:
    float16 = pytest.importorskip("onnxconverter_common.float16")
    model = float16.convert_float_to_float16(onnx.load(str(tiny_onnx)), keep_io_types=True)
    path = tmp_path / "model.fp16.onnx"
    onnx.save(model, str(path))
    assert precision_of(path) == "fp16"


def write_engine(
    tmp_path: Path, card: ModelCard, engine_bytes: bytes = b"serialized engine bytes", **overrides
) -> Path:
    engine = tmp_path / "model.trt10.3.sm87.fp16.engine"
    engine.write_bytes(engine_bytes)
    sidecar = {
        "card": card.to_dict(),
        "onnx_sha256": "0" * 64,
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
        "built_at": "2026-11-01T00:00:00+00:00",
        "build_seconds": 100.0,
        "workspace_mib": 1024,
    }
    sidecar.update(overrides)
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


def test_engine_card_comes_from_its_sidecar(tmp_path: Path, tiny_card: ModelCard) -> None:
    engine = write_engine(tmp_path, tiny_card)
    info = read_engine_info(engine)
    assert info.card == tiny_card and info.precision == "fp16" and info.compute_capability == "8.7"
    if importlib.util.find_spec("tensorrt") is None:  # with TensorRT, read_card also checks this host
        assert read_card(engine) == tiny_card


def test_engine_whose_checksum_does_not_match_is_refused(tmp_path: Path, tiny_card: ModelCard) -> None:
    engine = write_engine(tmp_path, tiny_card)
    engine.write_bytes(b"another engine entirely")
    with pytest.raises(RuntimeModelError, match="does not match the sidecar") as error:
        read_card(engine)
    assert str(engine) in str(error.value) and "rebuild it here" in str(error.value)


def test_engine_without_sidecar_is_refused(tmp_path: Path, tiny_card: ModelCard) -> None:
    engine = write_engine(tmp_path, tiny_card)
    sidecar_path(engine).unlink()
    with pytest.raises(RuntimeModelError, match="sidecar .* is missing"):
        read_card(engine)


def test_engine_for_another_gpu_or_tensorrt_is_refused(tmp_path: Path, tiny_card: ModelCard) -> None:
    info: EngineInfo = read_engine_info(write_engine(tmp_path, tiny_card))
    check_engine_host(info, "model.engine", "10.3.0", "8.7")  # the host it was built on: accepted
    with pytest.raises(
        RuntimeModelError, match="built with TensorRT 10.3.0, but this host has TensorRT 10.7.0.*rebuild it here"
    ):
        check_engine_host(info, "model.engine", "10.7.0", "8.7")
    with pytest.raises(RuntimeModelError, match="built for Orin \\(compute capability 8.7\\).*8.9.*rebuild it here"):
        check_engine_host(info, "model.engine", "10.3.0", "8.9")


def test_a_card_whose_input_size_is_not_the_graphs_is_refused_naming_both(tmp_path: Path, tiny_card: ModelCard) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(small_graph_model("Relu", tiny_card.replace(input_size=(4096, 4096)), graph_size=(256, 256)), str(path))
    with pytest.raises(RuntimeModelError) as error:
        read_card(path)
    message = str(error.value)
    assert str(path) in message and "4096x4096" in message and "256x256" in message and "edgeseg export" in message
    dynamic = tmp_path / "dynamic.onnx"  # a graph that takes any size takes the card's
    onnx.save(
        small_graph_model("Relu", tiny_card.replace(input_size=(512, 384)), graph_size=("height", "width")),
        str(dynamic),
    )
    assert read_card(dynamic).input_size == (512, 384)


def test_a_card_with_an_absurd_input_size_is_refused_in_an_onnx_and_in_an_engine(
    tmp_path: Path, tiny_card: ModelCard
) -> None:
    huge = tiny_card.replace(input_size=(32768, 32768))
    path = tmp_path / "model.onnx"
    onnx.save(small_graph_model("Relu", huge), str(path))  # the graph agrees: only the size itself is absurd
    with pytest.raises(RuntimeModelError, match=f"{path}: .*32768x32768, more than the 8192 a side"):
        read_card(path)
    with pytest.raises(RuntimeModelError, match="32768x32768, more than the 8192 a side"):
        read_engine_info(write_engine(tmp_path, huge))


@pytest.mark.parametrize("side", [4096, 32768])
def test_run_refuses_a_card_that_is_not_the_graphs_before_allocating_for_it(
    side: int, tmp_path: Path, tiny_card: ModelCard, video_20: Path
) -> None:
    """It used to end as "a bug in edgeseg" inside onnxruntime, after allocating a 4096x4096 frame (or gigabytes)."""
    import tracemalloc

    from click.testing import CliRunner

    from edgeseg.cli import main

    path = tmp_path / "model.onnx"
    onnx.save(small_graph_model("Relu", tiny_card.replace(input_size=(side, side)), graph_size=(256, 256)), str(path))
    tracemalloc.start()
    try:
        result = CliRunner().invoke(
            main, ["run", str(path), "--source", str(video_20), "--no-show", "--max-frames", "1"]
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1, result.output
    assert f"Error: {path}" in result.output and f"{side}x{side}" in result.output, result.output
    assert "bug in edgeseg" not in result.output and "Traceback" not in result.output
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the refusal"
