"""The INT8 ONNX form: onnxruntime static quantization (QDQ), calibrated on real images.

Activations are QUInt8 and weights QInt8 per output channel; on this kind of CPU (AVX2, no VNNI)
U8 activations with S8 weights is the fast combination. Calibration images go through the same
``edgeseg.preprocess.preprocess`` the runtime uses, so the ranges fit what the model will see.
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


def export_int8(
    onnx_path: str | Path,
    card: ModelCard,
    path: str | Path,
    calibration_images: Sequence[Path],
    progress: bool = False,
) -> Path:
    """Quantize the fp32 ONNX at ``onnx_path`` to a QDQ INT8 model at ``path``, with the card embedded."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_images:
        raise ValueError("INT8 calibration needs at least one image; pass --calib DIR with images in it")
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
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
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
