"""Weights stored as float16 in an fp32 ONNX: half the file, the arithmetic still float32.

Each large float32 initializer becomes a float16 one and a ``Cast`` back to float32 under the original
name, so every node sees what it saw before, rounded to float16. onnxruntime folds the casts when it
loads the model (constant folding) and then runs exactly the fp32 graph of the rounded weights, at
the fp32 graph's speed. That lets a larger network ship under a size limit (edgeseg's default model,
16 MB). The file says so in its metadata (``WEIGHTS_STORAGE_KEY``), so the runtime reports the
arithmetic's precision, fp32, rather than mistaking the float16 tensors for an FP16 model.

The FP16 and INT8 forms built from such a file start from ``restore_float32_weights``: the same graph
with float32 initializers again, holding the rounded values the file computes with (their converters
look for weights among the initializers). TensorRT's ONNX parser takes the casts as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.core.names import WEIGHTS_STORAGE_KEY, WEIGHTS_STORED_FLOAT16
from edgeseg.export.onnx_metadata import set_metadata

# Smaller tensors (biases, Resize scales, shapes) stay float32: they weigh nothing, and some operators
# need their inputs as constants of their own type.
MIN_ELEMENTS = 1024
FLOAT16_MAX = float(np.finfo(np.float16).max)
CAST_SUFFIX = "__float16"


def store_weights_float16(proto) -> int:
    """Store ``proto``'s large float32 initializers as float16 with a Cast back, in place; returns how many.

    A tensor with a value beyond float16's range stays float32 (rounding it would give Inf).
    """
    import onnx
    from onnx import numpy_helper

    casts, kept = [], []
    for initializer in proto.graph.initializer:
        values = numpy_helper.to_array(initializer) if initializer.data_type == onnx.TensorProto.FLOAT else None
        if values is None or values.size < MIN_ELEMENTS or np.abs(values).max() > FLOAT16_MAX:
            kept.append(initializer)
            continue
        stored = initializer.name + CAST_SUFFIX
        kept.append(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(
            onnx.helper.make_node(
                "Cast", [stored], [initializer.name], to=onnx.TensorProto.FLOAT, name=f"{initializer.name}_to_float32"
            )
        )
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    set_metadata(proto, WEIGHTS_STORAGE_KEY, WEIGHTS_STORED_FLOAT16 if casts else None)
    return len(casts)


def restore_float32_weights(proto) -> int:
    """Undo ``store_weights_float16`` in place: float32 initializers (of the rounded values), no casts."""
    import onnx
    from onnx import numpy_helper

    stored = {
        initializer.name: initializer
        for initializer in proto.graph.initializer
        if initializer.data_type == onnx.TensorProto.FLOAT16
    }

    def is_weight_cast(node) -> bool:
        return node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in stored

    casts = [node for node in proto.graph.node if is_weight_cast(node)]
    restored = [
        numpy_helper.from_array(numpy_helper.to_array(stored[node.input[0]]).astype(np.float32), node.output[0])
        for node in casts
    ]
    cast_inputs = {node.input[0] for node in casts}
    kept = [initializer for initializer in proto.graph.initializer if initializer.name not in cast_inputs]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept + restored)
    nodes = [node for node in proto.graph.node if not is_weight_cast(node)]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    set_metadata(proto, WEIGHTS_STORAGE_KEY, None)
    return len(casts)


def float32_weights_file(onnx_path: str | Path, scratch_path: Path) -> Path:
    """``onnx_path`` itself, or where its weights are stored as float16, a float32-weight copy at ``scratch_path``."""
    import onnx

    proto = onnx.load(str(onnx_path))
    if not has_float16_weights(proto):
        return Path(onnx_path)
    restore_float32_weights(proto)
    onnx.save(proto, str(scratch_path))
    return scratch_path


def has_float16_weights(proto) -> bool:
    return any(
        entry.key == WEIGHTS_STORAGE_KEY and entry.value == WEIGHTS_STORED_FLOAT16 for entry in proto.metadata_props
    )
