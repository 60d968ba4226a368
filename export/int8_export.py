"""The INT8 ONNX form: onnxruntime static quantization (QDQ), calibrated on real images.

Weights are QInt8 per output channel. Activations are QUInt8 by default ("u8": on CPUs without VNNI,
U8 activations with S8 weights is the fast combination), or symmetric QInt8 ("s8": zero points 0,
the only Q/DQ TensorRT's ONNX parser accepts). Ranges come from percentile calibration (default),
MinMax or entropy: on the default model percentile lost the least (benchmarks/results/int8-options-cpu.md),
at the same speed; S8 activations were 2x slower than U8 on an AVX2 CPU, so they are for TensorRT only. Calibration images go
through the same ``edgeseg.preprocess.preprocess`` the runtime uses, so the ranges fit what the model
will see.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgeseg.card import ModelCard
from edgeseg.export.onnx_export import set_card_metadata
from edgeseg.files import atomic_output, read_image
from edgeseg.preprocess import preprocess

DEFAULT_CALIBRATION_IMAGES = 64
ACTIVATIONS = ("u8", "s8")
CALIBRATIONS = ("minmax", "entropy", "percentile")


def export_int8(
    onnx_path: str | Path,
    card: ModelCard,
    path: str | Path,
    calibration_images: Sequence[Path],
    progress: bool = False,
    activations: str = "u8",
    calibration: str = "percentile",
) -> Path:
    """Quantize the fp32 ONNX at ``onnx_path`` to a QDQ INT8 model at ``path``, with the card embedded."""
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
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as scratch:
        # Shape inference and graph folding first, as onnxruntime advises: quantization then sees
        # the plain Conv chain instead of the shape arithmetic of the "same" padding.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
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
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
            proto = onnx.load(str(temporary))
            onnx.checker.check_model(proto, full_check=True)
            set_card_metadata(proto, card)
            onnx.save(proto, str(temporary))
    return path


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
