"""The INT8 ONNX forms: onnxruntime static quantization (QDQ), calibrated on real images.

Two forms, the same calibration images and method, the same nodes quantized:

- ``export_int8`` (model.int8.onnx, the CPU form): weights QInt8 per output channel, activations QUInt8
  ("u8": on CPUs without VNNI, U8 activations with S8 weights is the fast combination), biases int32.
- ``export_int8_tensorrt`` (model.int8-trt.onnx, what the INT8 TensorRT engine is built from): symmetric
  S8S8, activations and weights QInt8 with zero point 0, biases left float32 (``QuantizeBias=False``).
  TensorRT's ONNX parser takes only symmetric INT8 Q/DQ and no DequantizeLinear of int32 data, so the
  file is checked for both before it is written (``tensorrt_qdq_problems``).

Ranges come from percentile calibration (default), MinMax or entropy: on the default model percentile
lost the least (benchmarks/results/int8-options-cpu.md), at the same speed; S8 activations were 2x
slower than U8 on an AVX2 CPU, so the S8S8 form is for TensorRT only. Calibration images go through the
same ``edgeseg.core.preprocess.preprocess`` the runtime uses, so the ranges fit what the model will see.
Which layers stay float32: by default (and in the TensorRT form) the network's leading layers, down to a
quarter of the input's resolution (``FLOAT_UNTIL_STRIDE``); with ``measure_float_blocks`` (what `edgeseg
export` builds model.int8.onnx with) the few blocks a sensitivity pass on the calibration images finds to
move the output most (``edgeseg.export.int8_sensitivity``). Either way the file says which, and why, in its
metadata under ``FLOAT_CHOICE_KEY`` (``read_float_choice``).
"""

from __future__ import annotations

import inspect
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgeseg.core.card import ModelCard
from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import atomic_output, read_image
from edgeseg.core.preprocess import preprocess
from edgeseg.export.half_weights import float32_weights_file
from edgeseg.export.onnx_export import set_card_metadata, set_metadata
from edgeseg.export.shape_folding import fold_shape_arithmetic

DEFAULT_CALIBRATION_IMAGES = 64
ACTIVATIONS = ("u8", "s8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
# The network's first layers, down to a quarter of the input's resolution (the stem and, in an
# EfficientNet, its first two blocks), stay float32: they have few channels, so INT8 saves little work
# there, and their rounding reaches every later layer. Quantized, they flipped the lite2 default model's
# mask on one val image (Dice 0.77 -> 0); kept float, its CPU INT8 form passes the gate, at 1.49x the
# fp32 ONNX's speed instead of 1.68x (benchmarks/results/int8-float-layers-cpu.md). The CPU form now keeps
# float only the blocks it measures to matter (benchmarks/results/int8-sensitivity-cpu.md); this rule remains
# for the TensorRT form and where onnxruntime cannot reuse a calibration (``calibration_reusable``).
FLOAT_UNTIL_STRIDE = 4
# The metadata_props key of an INT8 ONNX's float32 layers: which were kept float and why (JSON).
FLOAT_CHOICE_KEY = "edgeseg_int8_float"
# onnxruntime's calibrators hold every activation of every calibration image at once, and then a merged
# copy: measured on the default model, 98.6 MiB of activations per image, 24 GiB resident at 227 images.
CALIBRATION_MEMORY_FACTOR = 1.1


class CalibrationMemoryError(EdgesegError, MemoryError):
    """More calibration images than this machine's memory can hold the activations of."""


def export_int8(
    onnx_path: str | Path,
    card: ModelCard,
    path: str | Path,
    calibration_images: Sequence[Path],
    progress: bool = False,
    activations: str = "u8",
    calibration: str = "percentile",
    float_bias: bool = False,
    float_until_stride: int = FLOAT_UNTIL_STRIDE,
    measure_float_blocks: bool = False,
) -> Path:
    """Quantize the fp32 ONNX at ``onnx_path`` to a QDQ INT8 model at ``path``, with the card embedded.

    ``float_bias`` leaves biases float32 (onnxruntime's ``QuantizeBias=False``) instead of int32 behind a
    DequantizeLinear. With "s8" activations that is the TensorRT form, checked before it is written.
    ``float_until_stride`` keeps the leading layers float32 (``leading_fine_nodes``); 1 quantizes them all.
    ``measure_float_blocks`` keeps float32 instead the blocks the sensitivity pass chooses on the calibration
    images (``edgeseg.export.int8_sensitivity``), where this onnxruntime can reuse one calibration.
    """
    import onnx

    if not calibration_images:
        raise ValueError("INT8 calibration needs at least one image; pass --calib DIR with images in it")
    if activations not in ACTIVATIONS or calibration not in CALIBRATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS} and calibration one of {CALIBRATIONS}")
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as scratch:
        prepared = prepare_for_quantization(onnx_path, Path(scratch))
        require_calibration_memory(prepared, len(calibration_images))
        reader = _calibration_reader(calibration_images, card, progress)
        quantize = Quantizer(prepared, Path(scratch) / "calibration.json", reader, activations, calibration, float_bias)
        float_nodes, choice = kept_float(
            quantize, prepared, card, calibration_images, float_until_stride, measure_float_blocks, progress
        )
        with atomic_output(path) as temporary:
            quantize(temporary, exclude=float_nodes)
            proto = onnx.load(str(temporary))
            onnx.checker.check_model(proto, full_check=True)
            if quantize.symmetric and float_bias:
                _require_tensorrt_qdq(proto, path)
            set_card_metadata(proto, card)
            set_metadata(proto, FLOAT_CHOICE_KEY, json.dumps(choice))
            onnx.save(proto, str(temporary))
    return path


def prepare_for_quantization(onnx_path: str | Path, scratch: Path) -> Path:
    """The fp32 ONNX as quantization should see it: float32 weights, shapes inferred, the graph folded."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Shape inference and graph folding first, as onnxruntime advises: quantization then sees
    # the plain Conv chain instead of the shape arithmetic of the "same" padding.
    prepared = scratch / "prepared.onnx"
    float32 = float32_weights_file(onnx_path, scratch / "float32-weights.onnx")
    # The "same" padding's shape arithmetic as constants: older onnxruntimes would quantize it (shape_folding).
    folded = fold_shape_arithmetic(float32, scratch / "folded.onnx")
    quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
    return prepared


def calibration_reusable() -> bool:
    """Whether this onnxruntime's quantize_static can keep its calibration for later calls (1.32 and later)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


class Quantizer:
    """onnxruntime's quantize_static of one prepared model with one set of options, calibrated on the first call.

    Later calls reuse the first call's ranges (onnxruntime's calibration cache), so variants that keep
    different layers float cost a quantization each, not a calibration. Without that cache only one call is made.
    """

    def __init__(
        self, prepared: Path, cache: Path, reader, activations: str, calibration: str, float_bias: bool
    ) -> None:
        self.prepared, self.reader, self.calibration = prepared, reader, calibration
        self.cache = cache if calibration_reusable() else None
        self.symmetric = activations == "s8"
        self.options = {"ActivationSymmetric": self.symmetric, "WeightSymmetric": True, "QuantizeBias": not float_bias}
        self.calibrated = False

    def __call__(self, out: Path, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> Path:
        """Quantize to ``out``: every node but ``exclude`` or, given ``only``, those nodes alone."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if self.calibrated and self.cache is None:
            raise RuntimeError("this onnxruntime cannot reuse a calibration: quantize once per Quantizer")
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        cache = {} if self.cache is None else {"calibration_cache_path": str(self.cache)}
        quantize_static(
            str(self.prepared),
            str(out),
            self.reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if self.symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=methods[self.calibration],
            nodes_to_exclude=list(exclude),
            nodes_to_quantize=list(only) if only else None,
            extra_options=self.options,
            **cache,
        )
        self.calibrated = True
        return Path(out)


def kept_float(
    quantize: Quantizer,
    prepared: Path,
    card: ModelCard,
    images: Sequence[Path],
    float_until_stride: int,
    measure: bool,
    progress: bool,
) -> tuple[list[str], dict]:
    """The nodes kept float32, by the sensitivity pass (``measure``) or the stride rule, and the record of why."""
    if measure and quantize.cache is not None:
        from edgeseg.export.int8_sensitivity import choose_float_blocks

        choice = choose_float_blocks(quantize, prepared, card, images, progress=progress)
        return choice.float_nodes, choice.to_dict()
    nodes = leading_fine_nodes(prepared, card, float_until_stride)
    record = {"rule": "stride", "float_until_stride": float_until_stride, "float_nodes": len(nodes)}
    if measure:
        import onnxruntime

        record["why"] = (
            f"the sensitivity pass needs onnxruntime 1.32 or later (its calibration cache); this is "
            f"{onnxruntime.__version__}, so the leading layers stay float32"
        )
    return nodes, record


def read_float_choice(path: str | Path) -> dict | None:
    """Which layers of an INT8 ONNX stayed float32 and why, as its export recorded it (None if not recorded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    entry = next((entry.value for entry in proto.metadata_props if entry.key == FLOAT_CHOICE_KEY), None)
    return None if entry is None else json.loads(entry)


def float_choice_note(choice: dict | None) -> str | None:
    """One line for the export report on which layers stayed float32 and why."""
    if not choice:
        return None
    if choice.get("rule") != "measured":
        reason = f" ({choice['why']})" if choice.get("why") else ""
        if not choice.get("float_nodes"):
            return f"layers kept float32: none, every layer is INT8{reason}"
        return (
            f"layers kept float32: the leading ones, down to 1/{choice.get('float_until_stride')} of the input "
            f"({choice.get('float_nodes')} nodes){reason}"
        )
    blocks = ", ".join(choice["float_blocks"]) or "none"
    share = choice["chosen_rms"] / choice["all_int8_rms"] if choice["all_int8_rms"] else 0.0
    return (
        f"layers kept float32, chosen by a sensitivity pass on {len(choice['images'])} calibration images "
        f"({len(choice['blocks'])} blocks measured): {blocks}; the INT8 error left is "
        f"{share:.2f} of the all-INT8 one (RMS probability change {choice['chosen_rms']:.4f} against "
        f"{choice['all_int8_rms']:.4f})"
    )


def leading_fine_nodes(model_path: Path, card: ModelCard, stride: int) -> list[str]:
    """The nodes, in graph order, before the first whose output is coarser than 1/``stride`` of the input.

    Empty where no node's output is known to be that coarse: a network that never gets there (or whose
    shapes shape inference cannot tell at the card's input size) is quantized whole, not left float.
    """
    import onnx

    proto = onnx.load(str(model_path))
    height, width = card.input_size
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, 3, height, width), strict=True):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in inferred.value_info}
    leading: list[str] = []
    for node in inferred.node:
        shape = shapes.get(node.output[0], [])
        out_height, out_width = (shape[2], shape[3]) if len(shape) == 4 else (0, 0)  # 0: unknown, or not an image
        if 0 < out_height * stride < height or 0 < out_width * stride < width:
            return leading
        leading.append(node.name)
    return []


def activation_bytes(model_path: Path) -> int:
    """Bytes of the float activations of one image through a shape-inferred ONNX (static shapes)."""
    import math

    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    total = 0
    for value in [*graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        dims = [dim.dim_value for dim in tensor.shape.dim]
        if tensor.elem_type == onnx.TensorProto.FLOAT and dims and all(size > 0 for size in dims):
            total += math.prod(dims) * 4
    return total


def available_memory_bytes() -> int | None:
    """Memory the system can still give (Linux's MemAvailable); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def require_calibration_memory(model_path: Path, images: int) -> None:
    """Refuse, with the largest --calib-n that fits, a calibration that would be killed for memory half-way."""
    available = available_memory_bytes()
    per_image = activation_bytes(model_path) * CALIBRATION_MEMORY_FACTOR
    if available is None or per_image == 0 or per_image * images <= available:
        return
    fits = int(available // per_image)
    raise CalibrationMemoryError(
        f"INT8 calibration on {images} images would hold about {per_image * images / 2**30:.1f} GiB of activations "
        f"(onnxruntime keeps every image's at once), and this machine has {available / 2**30:.1f} GiB available; "
        f"pass --calib-n {max(fits, 1)} or fewer"
    )


def export_int8_tensorrt(
    onnx_path: str | Path,
    card: ModelCard,
    path: str | Path,
    calibration_images: Sequence[Path],
    progress: bool = False,
    calibration: str = "percentile",
) -> Path:
    """The INT8 form TensorRT builds its engine from: symmetric S8S8 QDQ (zero points 0), float32 biases."""
    return export_int8(
        onnx_path,
        card,
        path,
        calibration_images,
        progress=progress,
        activations="s8",
        calibration=calibration,
        float_bias=True,
    )


def tensorrt_qdq_problems(proto) -> list[str]:
    """What TensorRT's ONNX parser would refuse in a QDQ model's Q/DQ nodes: a zero point that is not an
    int8 0 (it takes symmetric INT8 only; a QuantizeLinear without one quantizes to uint8), and a
    DequantizeLinear of constant data that is not int8, such as onnxruntime's int32 biases."""
    from onnx import TensorProto, numpy_helper

    constants = {tensor.name: tensor for tensor in proto.graph.initializer}
    problems = []
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = node.name or node.output[0]
        has_zero = len(node.input) > 2 and bool(node.input[2])
        zero = constants.get(node.input[2]) if has_zero else None
        if has_zero and zero is None:
            problems.append(f"{name}: its zero point is not a constant")
        elif not has_zero and node.op_type == "QuantizeLinear":
            problems.append(f"{name}: no zero point, so it quantizes to uint8")
        elif zero is not None and (zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any()):
            problems.append(f"{name}: zero point is not int8 0 ({TensorProto.DataType.Name(zero.data_type)})")
        data = constants.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type != TensorProto.INT8:
            problems.append(f"{name}: dequantizes {TensorProto.DataType.Name(data.data_type)} data, not int8")
    return problems


def _require_tensorrt_qdq(proto, path: Path) -> None:
    problems = tensorrt_qdq_problems(proto)
    if problems:
        raise ValueError(
            f"{path}: the INT8 form for TensorRT has Q/DQ its ONNX parser refuses ({len(problems)}): "
            + "; ".join(problems[:3])
        )


def _calibration_reader(images: Sequence[Path], card: ModelCard, progress: bool):
    from onnxruntime.quantization import CalibrationDataReader

    from edgeseg.core.progress import progress as track

    input_name = card.tensor_names.input

    class ImageReader(CalibrationDataReader):
        """Feeds one preprocessed image at a time; quantize_static reads it once."""

        def __init__(self) -> None:
            self.images = iter(track(images, desc="INT8 calibration", unit="image", enabled=progress, leave=False))

        def get_next(self) -> dict | None:
            image = next(self.images, None)
            if image is None:
                return None
            return {input_name: preprocess(read_image(image), card)}

    return ImageReader()
