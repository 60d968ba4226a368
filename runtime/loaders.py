"""Model files the runtime loads: an edgeseg ONNX export or a TensorRT engine with its sidecar.

Everything the runtime needs to use a model (input size, preprocessing, threshold) comes from the
model card stored with it: in the ONNX ``metadata_props`` under ``edgeseg_card``, or in the JSON
sidecar ``<engine>.json`` written next to a TensorRT engine (the engine itself stays pure, so
``trtexec`` can open it). Every problem is reported with the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.core.card import ModelCard
from edgeseg.core.errors import EdgesegError
from edgeseg.core.names import CARD_METADATA_KEY, ONNX_FILENAMES, WEIGHTS_STORAGE_KEY, WEIGHTS_STORED_FLOAT16, is_engine

log = logging.getLogger("edgeseg.runtime")

EXPORT_FIX = "run `edgeseg export RUN_DIR` to make one"
REBUILD_FIX = (
    "engines are built on the device they run on: rebuild it here with `edgeseg export RUN_DIR --format engine`"
)

# ONNX operators that only appear in a quantized graph.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
    }
)
ONNX_FLOAT16 = 10  # TensorProto.FLOAT16
MAX_INPUT_SIDE = 8192  # pixels a side of a card's input size: 32 times the default 256, far below what exhausts memory


class RuntimeModelError(EdgesegError, ValueError):
    """A model file the runtime cannot use; the message names the file and the fix."""


@dataclass(frozen=True)
class OnnxInfo:
    card: ModelCard
    precision: str  # "fp32", "fp16" or "int8", detected from the graph


@dataclass(frozen=True)
class EngineInfo:
    """A TensorRT engine's sidecar: its card and what it was built from, with and for."""

    card: ModelCard
    onnx_sha256: str
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" for Jetson Orin
    precision: str
    sidecar: dict[str, Any]
    onnx_file: str = ""  # the ONNX it was built from, beside it (sidecars before 2026-11-26 lack it)


def read_card(path: str | os.PathLike) -> ModelCard:
    """The model card of an edgeseg ONNX export or TensorRT engine (checked against its sidecar)."""
    path = Path(path)
    if is_engine(path):
        info = read_engine_info(path)
        host = engine_host()
        if host is not None:
            check_engine_host(info, path, *host)
        return info.card
    return read_onnx_info(path).card


def precision_of(path: str | os.PathLike) -> str:
    path = Path(path)
    return read_engine_info(path).precision if is_engine(path) else read_onnx_info(path).precision


# --- ONNX ------------------------------------------------------------------------------------------


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Card and precision of an ONNX file, read without building an inference session."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeModelError(f"{path}: no such model file. Pass a model.onnx from `edgeseg export` ({EXPORT_FIX}).")
    try:
        data = path.read_bytes()
        metadata, op_types, initializer_types, input_sides = _scan_onnx(data)
        locations = set(_external_locations(memoryview(data), (0, len(data)), "model"))
    except ValueError as error:
        raise RuntimeModelError(
            f"{path}: not a readable ONNX model ({error}); the file is corrupt or truncated. "
            f"Re-export it: {EXPORT_FIX}."
        ) from None
    check_external_data(path, sorted(locations))
    if CARD_METADATA_KEY not in metadata:
        raise RuntimeModelError(
            f"{path}: not an edgeseg export (no model card in its metadata), so its input size, preprocessing "
            f"and threshold are unknown; {EXPORT_FIX}."
        )
    card = ModelCard.from_json(metadata[CARD_METADATA_KEY], source=f"{path} (metadata {CARD_METADATA_KEY})")
    check_card_input_size(path, card, input_sides)
    if op_types & QUANTIZED_OPS:
        precision = "int8"
    elif metadata.get(WEIGHTS_STORAGE_KEY) == WEIGHTS_STORED_FLOAT16:
        precision = "fp32"  # float16 weights, each cast to float32 where it is read: fp32 arithmetic
    elif ONNX_FLOAT16 in initializer_types:
        precision = "fp16"
    else:
        precision = "fp32"
    return OnnxInfo(card=card, precision=precision)


def check_card_input_size(path: Path, card: ModelCard, graph_sides: tuple[int | None, int | None] | None) -> None:
    """Refuse, before anything is allocated for it, a card whose input size is absurd or not the graph's own.

    The runtime resizes every frame to the card's size: a size the graph does not take fails inside
    onnxruntime, and a huge one would allocate gigabytes first. A dynamic side (a name, not a number) takes any size.
    """
    height, width = card.input_size
    if max(height, width) > MAX_INPUT_SIDE:
        raise RuntimeModelError(
            f"{path}: its model card claims an input of {height}x{width}, more than the {MAX_INPUT_SIDE} a side "
            f"edgeseg accepts; the card is corrupt or was edited. Re-export the model: {EXPORT_FIX}."
        )
    if graph_sides is None:
        return
    if any(side is not None and side != expected for side, expected in zip(graph_sides, (height, width), strict=True)):
        graph = "x".join("?" if side is None else str(side) for side in graph_sides)
        raise RuntimeModelError(
            f"{path}: its model card says the input is {height}x{width}, but the graph takes {graph}; the card does "
            f"not belong to this graph (edited, or copied from another model). Re-export the model: {EXPORT_FIX}."
        )


# The runtime cannot count on the `onnx` package (a Jetson image ships onnxruntime, not onnx), and
# onnxruntime exposes neither the graph's operators nor its initializer types. The few fields needed
# are read straight from the protobuf wire format (https://protobuf.dev/programming-guides/encoding/):
# ModelProto.graph = 7, ModelProto.metadata_props = 14 (key = 1, value = 2), GraphProto.node = 1
# (NodeProto.op_type = 4), GraphProto.initializer = 5 (TensorProto.data_type = 2, name = 8), GraphProto.input
# = 11 (ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2;
# TensorShapeProto.dim = 1; Dimension.dim_value = 1, dim_param = 2).


def _scan_onnx(data: bytes) -> tuple[dict[str, str], set[str], set[int], tuple[int | None, int | None] | None]:
    """Metadata, operator types, initializer data types, and (height, width) of the image input (None: dynamic;
    None for both when the graph has no 4-D input)."""
    view = memoryview(data)
    metadata: dict[str, str] = {}
    op_types: set[str] = set()
    initializer_types: set[int] = set()
    initializer_names: set[str] = set()
    inputs: list[tuple[str, list[int | None]]] = []
    graph_seen = False
    for number, value in _fields(view, 0, len(view)):
        if number == 14 and isinstance(value, tuple):
            entry = _entry(view, value)
            metadata[entry.get(1, "")] = entry.get(2, "")
        elif number == 7 and isinstance(value, tuple):
            graph_seen = True
            for graph_field, item in _fields(view, *value):
                if graph_field == 1 and isinstance(item, tuple):
                    node_fields = _fields(view, *item)
                    op_types.update(
                        bytes(view[v[0] : v[1]]).decode("utf-8")
                        for n, v in node_fields
                        if n == 4 and isinstance(v, tuple)
                    )
                elif graph_field == 5 and isinstance(item, tuple):
                    for n, v in _fields(view, *item):
                        if n == 2 and isinstance(v, int):
                            initializer_types.add(v)
                        elif n == 8 and isinstance(v, tuple):
                            initializer_names.add(bytes(view[v[0] : v[1]]).decode("utf-8"))
                elif graph_field == 11 and isinstance(item, tuple):
                    inputs.append(_input_dims(view, item))
    if not graph_seen:
        raise ValueError("no graph in the file")
    # Old exporters list the weights among the inputs too: the image is the first input that is not one.
    images = [dims for name, dims in inputs if name not in initializer_names]
    sides = (images[0][2], images[0][3]) if images and len(images[0]) == 4 else None
    return metadata, op_types, initializer_types, sides


def _input_dims(view: memoryview, span: tuple[int, int]) -> tuple[str, list[int | None]]:
    """A graph input (ValueInfoProto): its name and its dims (None for a dynamic one, or one with no value)."""
    name, dims = "", []
    for number, value in _fields(view, *span):
        if number == 1 and isinstance(value, tuple):
            name = bytes(view[value[0] : value[1]]).decode("utf-8")
        elif number == 2 and isinstance(value, tuple):
            dims = [_dim_value(view, dim) for dim in _nested(view, value, (1, 2, 1))]
    return name, dims


def _nested(view: memoryview, span: tuple[int, int], path: tuple[int, ...]) -> list[tuple[int, int]]:
    """The spans of the messages at field numbers ``path`` inside the message at ``span``, the last one repeated."""
    spans = [span]
    for number in path:
        spans = [
            value for outer in spans for n, value in _fields(view, *outer) if n == number and isinstance(value, tuple)
        ]
    return spans


def _dim_value(view: memoryview, span: tuple[int, int]) -> int | None:
    values = [value for number, value in _fields(view, *span) if number == 1 and isinstance(value, int)]
    return values[0] if values and values[0] > 0 else None


def check_external_data(path: Path, locations: list[str]) -> None:
    """Refuse tensor data stored outside the model's folder: an absolute path, a '..', a symlink leading out.

    onnxruntime reads a tensor's external data from ``location``, relative to the model's folder; a
    hostile model could point it at any file this process can read.
    """
    folder = path.parent.resolve()
    for location in locations:
        try:
            inside = not Path(location).is_absolute() and (path.parent / location).resolve().is_relative_to(folder)
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
            inside = False
        if not inside:
            raise RuntimeModelError(
                f"{path}: its tensor data is stored outside the model's folder (external data location {location!r}); "
                f"refused: an edgeseg export keeps its weights in the file or beside it in {path.parent}. "
                f"Use the model as `edgeseg export` wrote it ({EXPORT_FIX})."
            )


# Tensors whose bytes lie in another file carry TensorProto.external_data = 13 (StringStringEntryProto
# key = 1, value = 2; data_location = 14 is EXTERNAL = 1, but every "location" found is checked). Where
# tensors are: ModelProto.graph = 7, ModelProto.functions = 25 (FunctionProto.node = 7); GraphProto.node
# = 1, initializer = 5, sparse_initializer = 15 (SparseTensorProto.values = 1, indices = 2); NodeProto.
# attribute = 5 (AttributeProto.t = 5, tensors = 10, sparse_tensor = 22, sparse_tensors = 23, and the
# subgraphs g = 6, graphs = 11). Field numbers from onnx/onnx.proto.
_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 10: "tensor", 22: "sparse", 23: "sparse", 6: "graph", 11: "graph"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_NESTING = 64


def _external_locations(view: memoryview, span: tuple[int, int], kind: str, depth: int = 0):
    """Yield the external data ``location`` of every tensor inside the message ``kind`` at ``span``."""
    if kind == "entry":
        entry = _entry(view, span)
        if entry.get(1) == "location":
            yield entry.get(2, "")
        return
    if depth > _MAX_NESTING:
        raise ValueError(f"messages nested deeper than {_MAX_NESTING}")
    children = _CHILDREN[kind]
    for number, value in _fields(view, *span):
        if number in children and isinstance(value, tuple):
            yield from _external_locations(view, value, children[number], depth + 1)


def _entry(view: memoryview, span: tuple[int, int]) -> dict[int, str]:
    """A StringStringEntryProto as {1: key, 2: value}."""
    return {n: bytes(view[v[0] : v[1]]).decode("utf-8") for n, v in _fields(view, *span) if isinstance(v, tuple)}


def _fields(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int | tuple[int, int] | None]]:
    """Yield (field number, value) of one protobuf message: an int, (start, end) of a length-delimited field, or
    None for a fixed-size one (never read)."""
    position = start
    while position < end:
        key, position = _varint(view, position, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"invalid field number at byte {position}")
        value: int | tuple[int, int] | None
        if wire_type == 0:
            value, position = _varint(view, position, end)
        elif wire_type == 1:
            value, position = None, position + 8
        elif wire_type == 5:
            value, position = None, position + 4
        elif wire_type == 2:
            length, position = _varint(view, position, end)
            value, position = (position, position + length), position + length
        else:
            raise ValueError(f"invalid wire type {wire_type} at byte {position}")
        if position > end:
            raise ValueError(f"field {number} runs past the end of its message (truncated file?)")
        yield number, value


def _varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= end or shift > 63:
            raise ValueError(f"malformed varint at byte {position}")
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


# --- TensorRT engines ------------------------------------------------------------------------------


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_engine_info(engine_path: str | os.PathLike) -> EngineInfo:
    """Read an engine's sidecar, check the engine's checksum against it, and the ONNX's when it is beside it."""
    engine_path = Path(engine_path)
    sidecar = sidecar_path(engine_path)
    if not engine_path.is_file():
        raise RuntimeModelError(f"{engine_path}: no such engine file. {REBUILD_FIX}.")
    if not sidecar.is_file():
        raise RuntimeModelError(
            f"{engine_path}: its sidecar {sidecar.name} is missing, so the model card (input size, preprocessing, "
            f"threshold) is unknown. Keep the sidecar next to the engine, or "
            f"{REBUILD_FIX[0].lower() + REBUILD_FIX[1:]}."
        )
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RuntimeModelError(f"{sidecar}: not valid JSON ({error}). {REBUILD_FIX}.") from None
    if not isinstance(data, dict) or "card" not in data:
        raise RuntimeModelError(f"{sidecar}: not an edgeseg engine sidecar (no 'card'). {REBUILD_FIX}.")
    card = ModelCard.from_dict(data["card"], source=f"{sidecar} (card)")
    check_card_input_size(sidecar, card, None)  # the engine's own input shape is known only to TensorRT
    try:
        info = EngineInfo(
            card=card,
            onnx_sha256=str(data.get("onnx_sha256", "")),
            engine_sha256=str(data["engine_sha256"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu_name=str(data.get("gpu_name", "")),
            compute_capability=str(data["compute_capability"]),
            precision=str(data.get("precision", "fp32")),
            sidecar=data,
            onnx_file=Path(str(data.get("onnx_file", ""))).name,  # a name beside the engine, never a path
        )
    except KeyError as error:
        raise RuntimeModelError(f"{sidecar}: the sidecar lacks {error.args[0]!r}. {REBUILD_FIX}.") from None
    actual = sha256_of(engine_path)
    if actual != info.engine_sha256:
        raise RuntimeModelError(
            f"{engine_path}: its sha256 {actual[:12]}... does not match the sidecar's {info.engine_sha256[:12]}..., "
            f"so the engine was changed or the sidecar belongs to another engine. {REBUILD_FIX}."
        )
    check_engine_source(info, engine_path)
    return info


def check_engine_source(info: EngineInfo, engine_path: str | os.PathLike) -> None:
    """Refuse an engine whose ONNX, where it lies beside the engine, is no longer the one it was built from.

    The sidecar names that ONNX (``onnx_file``); an older sidecar does not, and then any edgeseg ONNX
    beside the engine that matches will do. With no such ONNX beside it there is nothing to compare.
    """
    engine_path = Path(engine_path)
    names = [info.onnx_file] if info.onnx_file else list(ONNX_FILENAMES.values())
    present = [engine_path.with_name(name) for name in names if engine_path.with_name(name).is_file()]
    if not info.onnx_sha256 or not present:
        return
    found = {path.name: sha256_of(path) for path in present}
    if info.onnx_sha256 in found.values():
        return
    seen = ", ".join(f"{name} has {digest[:12]}..." for name, digest in found.items())
    form = "engine-int8" if info.precision == "int8" else "engine"
    raise RuntimeModelError(
        f"{engine_path}: built from another ONNX than the one beside it (the sidecar records sha256 "
        f"{info.onnx_sha256[:12]}...; {seen}): the model was exported again after the engine was built. Rebuild the "
        f"engine from it on this device: "
        f"`edgeseg export {engine_path.with_name(ONNX_FILENAMES['onnx'])} --format {form}`."
    )


def check_engine_host(
    info: EngineInfo,
    engine_path: str | os.PathLike,
    tensorrt_version: str,
    compute_capability: str,
    gpu_name: str | None = None,
) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU than this host's.

    A GPU of the same compute capability but another name (an RTX 4090 and an L4 are both 8.9) may
    load the engine, tuned for the other one: that is a warning, not a refusal.
    """
    if info.tensorrt_version != tensorrt_version:
        raise RuntimeModelError(
            f"{engine_path}: built with TensorRT {info.tensorrt_version}, but this host has TensorRT "
            f"{tensorrt_version}; a serialized engine only loads in the version that built it. {REBUILD_FIX}."
        )
    if info.compute_capability != compute_capability:
        built_for = (
            f"{info.gpu_name} (compute capability {info.compute_capability})"
            if info.gpu_name
            else f"compute capability {info.compute_capability}"
        )
        raise RuntimeModelError(
            f"{engine_path}: built for {built_for}, but this GPU has compute capability {compute_capability}. "
            f"{REBUILD_FIX}."
        )
    if gpu_name and info.gpu_name and gpu_name != info.gpu_name:
        log.warning(
            "%s: built on a %s, and this GPU is a %s (the same compute capability %s): TensorRT picked its "
            "kernels for the other GPU, so this one may run it slower or refuse it; %s",
            engine_path,
            info.gpu_name,
            gpu_name,
            compute_capability,
            REBUILD_FIX,
        )


def engine_host() -> tuple[str, str, str] | None:
    """(TensorRT version, GPU compute capability, GPU name) of this host, or None without TensorRT and a GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    from edgeseg.runtime.cuda import CudaError, device

    try:
        gpu = device()
    except (ImportError, CudaError):  # no cuda-python, or a driver too old: the backend says which when it starts
        return None
    if gpu is None:
        return None
    return trt.__version__, gpu.compute_capability, gpu.name
