"""A naive FP16 normalisation, to test the FP16 overflow the CPU's own kernels never show.

onnxruntime's CPU InstanceNormalization for float16 computes inside in higher precision, so an FP16
norm whose (x - mean)^2 passes float16's 65504 (what TensorRT's FP16 kernels or a hand-written FP16
kernel hit) cannot fail on this CPU by itself. Here each float16 InstanceNormalization is written out
as the primitive float16 ops such a kernel runs, each result rounded to float16, so it overflows the
same way. Float32 norms (the --keep-norm-fp32 form: the norm between casts) are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def decompose_fp16_instance_norms(proto: onnx.ModelProto) -> int:
    """Replace, in place, every float16 InstanceNormalization by its primitive float16 ops; returns how many."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {value.name: value.type.tensor_type for value in [*inferred.graph.input, *inferred.graph.value_info]}
    nodes, replaced = [], 0
    for node in proto.graph.node:
        x = node.input[0] if node.op_type == "InstanceNormalization" else ""
        if not x or types[x].elem_type != TensorProto.FLOAT16:
            nodes.append(node)
            continue
        nodes += _primitive_norm(proto, node, rank=len(types[x].shape.dim), tag=f"naive_norm{replaced}")
        replaced += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return replaced


def _primitive_norm(proto: onnx.ModelProto, node: onnx.NodeProto, rank: int, tag: str) -> list[onnx.NodeProto]:
    """(x - mean) / sqrt(mean((x - mean)^2) + eps) * scale + bias over the spatial axes, in float16.

    onnxruntime's CPU provider has no float16 kernels for these ops: it runs them in float32 and, in a
    chain of them, drops the rounding to float16 between them. So each op runs in float32 here and its
    result goes explicitly through float16 and back (those casts it keeps), as a float16 kernel stores it.
    """
    x, scale, bias = node.input
    assert rank >= 3, f"{node.name}: the rank of its input is unknown"
    epsilon = next((attribute.f for attribute in node.attribute if attribute.name == "epsilon"), 1e-5)
    constants = {
        f"{tag}_axes": np.arange(2, rank, dtype=np.int64),  # the spatial axes
        f"{tag}_channel_axes": np.arange(1, rank - 1, dtype=np.int64),  # scale (C,) -> (C, 1, ...)
        f"{tag}_eps": np.array(epsilon, np.float32),
    }
    proto.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    nodes: list[onnx.NodeProto] = []

    def op(op_type: str, inputs: list[str], name: str, **attributes) -> str:
        """``op_type`` in float32, its result rounded to float16 (inf beyond 65504) and back."""
        nodes.extend(
            [
                helper.make_node(op_type, inputs, [f"{tag}_{name}_exact"], **attributes),
                helper.make_node("Cast", [f"{tag}_{name}_exact"], [f"{tag}_{name}_fp16"], to=TensorProto.FLOAT16),
                helper.make_node("Cast", [f"{tag}_{name}_fp16"], [f"{tag}_{name}"], to=TensorProto.FLOAT),
            ]
        )
        return f"{tag}_{name}"

    axes, channel_axes, eps = f"{tag}_axes", f"{tag}_channel_axes", f"{tag}_eps"
    x = op("Identity", [x], "x")
    mean = op("ReduceMean", [x, axes], "mean", keepdims=1)
    centred = op("Sub", [x, mean], "centred")
    squared = op("Mul", [centred, centred], "squared")  # inf once |x - mean| > 256
    variance = op("ReduceMean", [squared, axes], "variance", keepdims=1)
    std = op("Sqrt", [op("Add", [variance, eps], "variance_eps")], "std")
    normalised = op("Div", [centred, std], "normalised")
    scaled = op("Mul", [normalised, op("Unsqueeze", [scale, channel_axes], "scale")], "scaled")
    output = op("Add", [scaled, op("Unsqueeze", [bias, channel_axes], "bias")], "output")
    nodes.append(helper.make_node("Cast", [output], [node.output[0]], to=TensorProto.FLOAT16))
    return nodes


def with_naive_fp16_norms(export_fp16: Callable[..., Path]) -> Callable[..., Path]:
    """``export_fp16`` whose FP16 form (not the one with norms kept in FP32) computes its norms naively."""

    def naive_export_fp16(onnx_path, card, path, keep_norm_fp32: bool = False) -> Path:
        path = export_fp16(onnx_path, card, path, keep_norm_fp32=keep_norm_fp32)
        if not keep_norm_fp32:
            proto = onnx.load(str(path))
            assert decompose_fp16_instance_norms(proto), "the FP16 form has no float16 InstanceNormalization"
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, str(path))
        return path

    return naive_export_fp16
