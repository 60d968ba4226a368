"""The shape arithmetic of a static-shape ONNX, replaced by the constants it computes.

timm's "same" padding (the TF EfficientNet encoders) works out each Pad's amounts from its input's
shape at run time: Shape -> Gather -> Div -> Ceil -> ... -> Pad. With the card's static input shape
these are constants. onnxruntime folds them while preparing a model for quantization from 1.31 on;
older releases (every CUDA 12 build of onnxruntime-gpu, JetPack's) cannot fold the Ceil, keep the whole
chain, and their quantizer then puts Q/DQ pairs on it: the pads come out wrong and the INT8 model fails
when it runs (QLinearAdd '/decoder/p4/Add': "Attempting to broadcast an axis by a dimension other than
1. 14 by 15"). Here onnxruntime itself computes those tensors once, on a zero image, whatever its
version, and they become initializers.
"""

from __future__ import annotations

from pathlib import Path

SHAPE_OPS = ("Shape", "Size")  # their outputs depend on a tensor's shape, never on its values


def shape_only_tensors(graph) -> set[str]:
    """Tensors computed from shapes and constants alone: the same for every image of a static-shape input."""
    constant = {initializer.name for initializer in graph.initializer} | {""}  # "": an omitted optional input
    shape_only: set[str] = set()
    for node in graph.node:  # ONNX keeps nodes in topological order
        known = constant | shape_only
        if node.op_type in SHAPE_OPS or all(name in known for name in node.input):
            (constant if node.op_type == "Constant" else shape_only).update(node.output)
    return shape_only


def frontier(graph, shape_only: set[str]) -> list[str]:
    """The shape-only tensors that the rest of the graph reads (a Pad's amounts, a Reshape's shape)."""
    outputs = {value.name for value in graph.output}
    read_by_rest = {name for node in graph.node if not set(node.output) <= shape_only for name in node.input}
    return sorted(name for name in shape_only if name in read_by_rest or name in outputs)


def is_static(graph) -> bool:
    dims = [dim for value in graph.input for dim in value.type.tensor_type.shape.dim]
    return bool(dims) and all(dim.HasField("dim_value") and dim.dim_value > 0 for dim in dims)


def fold_shape_arithmetic(onnx_path: Path, out_path: Path) -> Path:
    """``onnx_path`` itself where it has no shape arithmetic (or its input is not static), else a copy at
    ``out_path`` whose shape arithmetic is replaced by the constants it computes."""
    import onnx

    proto = onnx.load(str(onnx_path))
    shape_only = shape_only_tensors(proto.graph)
    needed = frontier(proto.graph, shape_only)
    if not needed or not is_static(proto.graph):
        return onnx_path
    values = evaluate(proto, needed)
    kept = [node for node in proto.graph.node if not set(node.output) <= shape_only]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(values[name], name) for name in needed)
    remove_unused(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out_path))
    return out_path


def evaluate(proto, names: list[str]) -> dict:
    """The values of ``names`` for a zero input, computed by onnxruntime on the CPU."""
    import numpy as np
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    types = {value.name: value for value in [*inferred.value_info, *inferred.output]}
    missing = [name for name in names if name not in types]
    if missing:
        raise RuntimeError(f"shape inference gives no type for {missing[:3]}: cannot fold the model's shape arithmetic")
    del probe.graph.output[:]
    probe.graph.output.extend(types[name] for name in names)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for value in proto.graph.input:
        tensor = value.type.tensor_type
        shape = [dim.dim_value for dim in tensor.shape.dim]
        feeds[value.name] = np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return dict(zip(names, session.run(names, feeds), strict=True))


def remove_unused(graph) -> None:
    """Drop the nodes (Constants, mostly) and initializers that nothing reads any more."""
    outputs = {value.name for value in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        kept = [node for node in graph.node if any(name in read for name in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    initializers = [initializer for initializer in graph.initializer if initializer.name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
