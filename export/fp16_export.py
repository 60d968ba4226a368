"""The FP16 ONNX form: weights and arithmetic in float16, inputs and outputs still float32.

onnxruntime's converter (``onnxruntime.transformers.float16``) is used because it keeps float32 I/O
all the way through: onnxconverter-common with ``keep_io_types=True`` leaves this network's output
float16 (its final Resize is on that converter's block list). onnxruntime's converter in turn leaves
a graph ``onnx.checker`` calls unsorted, which ``OnnxModel.topological_sort()`` mends.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.core.card import ModelCard
from edgeseg.core.files import atomic_output
from edgeseg.export.half_weights import has_float16_weights, restore_float32_weights
from edgeseg.export.onnx_export import set_card_metadata

# The known FP16 hazards of smp's FPN decoder: GroupNorm (exported as InstanceNormalization) and
# bilinear upsampling. keep_norm_fp32 (a --config file's [build] setting) keeps these in float32.
NORM_OPS = ("InstanceNormalization", "GroupNormalization", "LayerNormalization", "BatchNormalization", "Resize")


def export_fp16(onnx_path: str | Path, card: ModelCard, path: str | Path, keep_norm_fp32: bool = False) -> Path:
    """Convert the fp32 ONNX at ``onnx_path`` to FP16 at ``path`` and embed the card.

    ``keep_norm_fp32`` leaves the normalisation and Resize nodes in float32 (casts around them).
    """
    import onnx
    from onnxruntime.transformers import float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = onnx.load(str(onnx_path))
    if has_float16_weights(proto):  # convert the float32 graph those weights are cast into
        restore_float32_weights(proto)
    block_list = list(float16.DEFAULT_OP_BLOCK_LIST)
    if keep_norm_fp32:
        block_list += list(NORM_OPS)
    converted = float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=block_list)
    graph = OnnxModel(converted)
    graph.topological_sort()
    converted = graph.model
    _require_float32_io(converted, onnx_path)
    onnx.checker.check_model(converted, full_check=True)
    set_card_metadata(converted, card)
    path = Path(path)
    with atomic_output(path) as temporary:
        onnx.save(converted, str(temporary))
    return path


def _require_float32_io(proto, source: str | Path) -> None:
    import onnx

    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(
                f"{source}: FP16 conversion left {value.name!r} as "
                f"{onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)}, not float32; the runtime "
                "feeds and reads float32. This is a bug in the converter's keep_io_types handling."
            )
