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
same ``edgeseg.preprocess.preprocess`` the runtime uses, so the ranges fit what the model will see.
Both forms keep the network's leading layers, down to a quarter of the input's resolution, in float32
(``FLOAT_UNTIL_STRIDE``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgeseg.card import ModelCard
from edgeseg.errors import EdgesegError
from edgeseg.export.half_weights import float32_weights_file
from edgeseg.export.onnx_export import set_card_metadata
from edgeseg.export.shape_folding import fold_shape_arithmetic
from edgeseg.files import atomic_output, read_image
from edgeseg.preprocess import preprocess

DEFAULT_CALIBRATION_IMAGES = 64
ACTIVATIONS = ("u8", "s8")
CALIBRATIONS = ("minmax", "entropy", "percentile")
# The network's first layers, down to a quarter of the input's resolution (the stem and, in an
# EfficientNet, its first two blocks), stay float32: they have few channels, so INT8 saves little work
# there, and their rounding reaches every later layer. Quantized, they flipped the lite2 default model's
# mask on one val image (Dice 0.77 -> 0); kept float, its CPU INT8 form passes the gate, at 1.49x the
# fp32 ONNX's speed instead of 1.68x (benchmarks/results/int8-float-layers-cpu.md).
FLOAT_UNTIL_STRIDE = 4
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
) -> Path:
    """Quantize the fp32 ONNX at ``onnx_path`` to a QDQ INT8 model at ``path``, with the card embedded.

    ``float_bias`` leaves biases float32 (onnxruntime's ``QuantizeBias=False``) instead of int32 behind a
    DequantizeLinear. With "s8" activations that is the TensorRT form, checked before it is written.
    ``float_until_stride`` keeps the leading layers float32 (``leading_fine_nodes``); 1 quantizes them all.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_images:
        raise ValueError("INT8 calibration needs at least one image; pass --calib DIR with images in it")
    if activations not in ACTIVATIONS or calibration not in CALIBRATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS} and calibration one of {CALIBRATIONS}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    symmetric = activations == "s8"
    options = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not float_bias}
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as scratch:
        # Shape inference and graph folding first, as onnxruntime advises: quantization then sees
        # the plain Conv chain instead of the shape arithmetic of the "same" padding.
        prepared = Path(scratch) / "prepared.onnx"
        float32 = float32_weights_file(onnx_path, Path(scratch) / "float32-weights.onnx")
        # The "same" padding's shape arithmetic as constants: older onnxruntimes would quantize it (shape_folding).
        folded = fold_shape_arithmetic(float32, Path(scratch) / "folded.onnx")
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        require_calibration_memory(prepared, len(calibration_images))
        reader = _calibration_reader(calibration_images, card, progress)
        with atomic_output(path) as temporary:
            quantize_static(
                str(prepared),
                str(temporary),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=methods[calibration],
                nodes_to_exclude=leading_fine_nodes(prepared, card, float_until_stride),
                extra_options=options,
            )
            proto = onnx.load(str(temporary))
            onnx.checker.check_model(proto, full_check=True)
            if symmetric and float_bias:
                _require_tensorrt_qdq(proto, path)
            set_card_metadata(proto, card)
            onnx.save(proto, str(temporary))
    return path


def leading_fine_nodes(model_path: Path, card: ModelCard, stride: int) -> list[str]:
    """The nodes, in graph order, before the first whose output is coarser than 1/``stride`` of the input.

    Empty where no node's output is known to be that coarse: a network that never gets there (or whose
    shapes shape inference cannot tell at the card's input size) is quantized whole, not left float.
    """
    import onnx

    proto = onnx.load(str(model_path))
    height, width = card.input_size
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, 3, height, width)):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in inferred.value_info}
    leading = []
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
    return export_int8(onnx_path, card, path, calibration_images, progress=progress, activations="s8",
                       calibration=calibration, float_bias=True)


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
        raise ValueError(f"{path}: the INT8 form for TensorRT has Q/DQ its ONNX parser refuses ({len(problems)}): "
                         + "; ".join(problems[:3]))


def _calibration_reader(images: Sequence[Path], card: ModelCard, progress: bool):
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    input_name = card.tensor_names.input

    class ImageReader(CalibrationDataReader):
        """Feeds one preprocessed image at a time; quantize_static reads it once."""

        def __init__(self) -> None:
            self.images = iter(tqdm(images, desc="INT8 calibration", unit="image", disable=not progress, leave=False))

        def get_next(self) -> dict | None:
            image = next(self.images, None)
            if image is None:
                return None
            return {input_name: preprocess(read_image(image), card)}

    return ImageReader()
