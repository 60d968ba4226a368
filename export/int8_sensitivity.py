"""Which blocks of a network stay float32 in its CPU INT8 form: chosen by measuring each block, not by a rule.

``choose_float_blocks`` runs on the calibration images (training data; never the images the gate judges):

1. Blocks (``quantization_blocks``): a layer is a weighted node (a convolution, a matrix product) with the nodes
   that follow it up to the next one (its activation, a residual Add, a norm, a Resize), so a convolution is
   never measured, or kept float, apart from the activation fused into it (on the default model its stem's
   ReLU6 kept float alone made INT8 five times worse: the convolution's output was then quantized over its raw
   range). A block is a run of layers whose names share their first ``BLOCK_DEPTH`` module levels: an
   EfficientNet block ("encoder/model/blocks.1/blocks.1.0": expansion, depthwise, projection), the stem, a
   decoder stage, the head. Blocks rather than single layers: at the same error left, the default model's
   per-layer choice kept more layers float, scattered between INT8 ones, and ran 8% slower.
2. Sensitivity: each block alone in INT8, the rest float32, on the ``SENSITIVITY_IMAGES`` calibration images
   with the most pixels near the threshold (where a mask is decided); the measure is the root mean square
   change of the probability against the float32 model. One block at a time rather than all INT8 but one:
   on the default model one block carries most of the all-INT8 error, and next to it every other block's
   share is lost (all-but-one variants stay within 5% of the all-INT8 error).
3. Choice (``pick_float_blocks``): separate blocks' errors add as variances (on the default model the root of
   their sum of squares is within 12% of the all-INT8 error), so the blocks kept float are the fewest, most
   sensitive first, that leave at most ``RESIDUAL_SHARE`` of the all-INT8 error, and at most ``MAX_FLOAT_BLOCKS``.

Calibration runs once: every variant reuses its ranges (onnxruntime's calibration cache), so the pass costs
one quantization and a few inferences per block. benchmarks/results/int8-sensitivity-cpu.md has the figures.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.card import ModelCard
from edgeseg.core.files import read_image
from edgeseg.core.postprocess import activate
from edgeseg.core.preprocess import preprocess
from edgeseg.core.progress import progress as track

BLOCK_DEPTH = 4
MAX_BLOCKS = 64  # more than this are measured in runs of neighbours: the pass stays a few minutes at most
SENSITIVITY_IMAGES = 16
UNSURE_MARGIN = 0.1  # |probability - threshold| below this: a pixel whose mask value rounding may flip
# The error left in INT8, as a share of the all-INT8 error. The stride rule this replaces (float down to a quarter
# of the input) left 0.33-0.34 on the default model's calibration images and passed the gate: this keeps at
# least its accuracy, with fewer and cheaper float layers (the record says how the value was set).
RESIDUAL_SHARE = 0.3
MAX_FLOAT_BLOCKS = 8
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# quantize(out, exclude=nodes kept float, only=nodes quantized (None: all)) -> out; calibrated once.
Quantize = Callable[..., Path]


@dataclass(frozen=True)
class BlockSensitivity:
    block: str
    nodes: tuple[str, ...]
    rms: float  # RMS change of the probability against float32, with only this block in INT8


@dataclass(frozen=True)
class FloatChoice:
    """The sensitivity pass's result: every block's sensitivity, most sensitive first, and the blocks kept float."""

    ranked: tuple[BlockSensitivity, ...]
    float_blocks: tuple[str, ...]
    predicted_share: float  # the error left in INT8 as a share of all-INT8's, from the blocks' own errors
    all_int8_rms: float  # measured, every block in INT8
    chosen_rms: float  # measured, the chosen blocks float
    images: tuple[str, ...]  # the scoring images (no time or host is kept: the same inputs give the same file)

    @property
    def float_nodes(self) -> list[str]:
        return nodes_of(self.ranked, self.float_blocks)

    def to_dict(self) -> dict:
        return {
            "rule": "measured",
            "float_blocks": list(self.float_blocks),
            "float_nodes": len(self.float_nodes),
            "residual_share_target": RESIDUAL_SHARE,
            "predicted_share": round(self.predicted_share, 4),
            "all_int8_rms": round(self.all_int8_rms, 6),
            "chosen_rms": round(self.chosen_rms, 6),
            "images": [Path(image).name for image in self.images],
            "blocks": [{"block": block.block, "rms": round(block.rms, 6)} for block in self.ranked],
        }


def choose_float_blocks(
    quantize: Quantize, prepared: Path, card: ModelCard, images: Sequence[Path], progress: bool = False
) -> FloatChoice:
    """Measure every block of the float32 model at ``prepared`` in INT8 alone and choose the ones kept float."""
    blocks = quantization_blocks(prepared)
    reference, batches, chosen_images = scoring_set(prepared, card, images)
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-sensitivity-") as scratch:

        def rms_of(name: str, **selection) -> float:
            variant = quantize(Path(scratch) / f"{name}.onnx", **selection)
            return rms_change(probabilities(variant, batches, card), reference)

        measured = track(list(blocks.items()), desc="INT8 sensitivity", unit="block", enabled=progress, leave=False)
        ranked = sorted(
            (
                BlockSensitivity(block, tuple(nodes), rms_of(f"block{number}", only=nodes))
                for number, (block, nodes) in enumerate(measured)
            ),
            key=lambda block: -block.rms,
        )
        float_blocks, share = pick_float_blocks(ranked)
        all_int8, chosen = rms_of("all"), rms_of("chosen", exclude=nodes_of(ranked, float_blocks))
    return FloatChoice(
        tuple(ranked), tuple(float_blocks), share, all_int8, chosen, tuple(str(image) for image in chosen_images)
    )


def pick_float_blocks(
    ranked: Sequence[BlockSensitivity], residual_share: float = RESIDUAL_SHARE, max_blocks: int = MAX_FLOAT_BLOCKS
) -> tuple[list[str], float]:
    """The fewest most sensitive blocks whose float32 leaves at most ``residual_share`` of the all-INT8 error.

    Errors add as variances: all-INT8's is the root of the sum of the blocks' squared errors. Returns the blocks
    and the share they leave (0.0 where no block changes anything: nothing is kept float).
    """
    ordered = sorted(ranked, key=lambda block: -block.rms)
    total = sum(block.rms**2 for block in ordered)
    if total == 0:
        return [], 0.0
    remaining = total
    chosen: list[str] = []
    for block in ordered:
        if math.sqrt(max(remaining, 0.0) / total) <= residual_share or len(chosen) >= max_blocks:
            break
        chosen.append(block.block)
        remaining -= block.rms**2
    return chosen, math.sqrt(max(remaining, 0.0) / total)


def nodes_of(blocks: Sequence[BlockSensitivity], names: Sequence[str]) -> list[str]:
    kept = set(names)
    return [node for block in blocks if block.block in kept for node in block.nodes]


def quantization_blocks(
    model_path: Path, depth: int = BLOCK_DEPTH, max_blocks: int = MAX_BLOCKS
) -> dict[str, list[str]]:
    """The graph's node names by block, in graph order (the module docstring says what a block is)."""
    import onnx

    blocks: dict[str, list[str]] = {}
    current: str | None = None  # the block being filled
    name: str | None = None  # its module path
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        node_block = block_name(node.name, depth)
        if current is None or (node.op_type in WEIGHTED_OPS and node_block != name):
            name, current = node_block, unique_name(node_block, blocks)
            blocks[current] = []
        blocks[current].append(node.name)
    return merge_neighbours(blocks, max_blocks)


def block_name(node_name: str, depth: int = BLOCK_DEPTH) -> str:
    """A node's module path, ``depth`` levels deep, without the operator ("/encoder/conv_stem/Conv" ->
    "encoder/conv_stem"); a name without a path is its own block."""
    parts = [part for part in node_name.split("/") if part]
    return "/".join((parts[:-1] or parts)[:depth])


def unique_name(name: str, taken: dict) -> str:
    number, unique = 1, name
    while unique in taken:
        number += 1
        unique = f"{name}#{number}"
    return unique


def merge_neighbours(blocks: dict[str, list[str]], max_blocks: int) -> dict[str, list[str]]:
    """At most ``max_blocks`` blocks: runs of neighbouring blocks merged into one, named by their first and last."""
    names = list(blocks)
    size = math.ceil(len(names) / max_blocks) if max_blocks > 0 else len(names)
    if size <= 1:
        return blocks
    merged = {}
    for start in range(0, len(names), size):
        run = names[start : start + size]
        merged[run[0] if len(run) == 1 else f"{run[0]} .. {run[-1]}"] = [node for name in run for node in blocks[name]]
    return merged


def scoring_set(
    model_path: Path, card: ModelCard, images: Sequence[Path], count: int = SENSITIVITY_IMAGES
) -> tuple[np.ndarray, list[np.ndarray], list[Path]]:
    """The ``count`` images with the most pixels near the threshold: their float32 probabilities, inputs and paths.

    One image at a time: only the chosen ones are held, whatever the number of calibration images.
    """
    session = cpu_session(model_path)
    unsure = [
        np.mean(
            np.abs(probability(session, preprocess(read_image(image), card), card) - card.output.threshold)
            < UNSURE_MARGIN
        )
        for image in images
    ]
    chosen = [Path(images[index]) for index in np.argsort(-np.asarray(unsure), kind="stable")[:count]]
    batches = [preprocess(read_image(image), card) for image in chosen]
    return np.stack([probability(session, batch, card) for batch in batches]), batches, chosen


def probabilities(model_path: Path, batches: Sequence[np.ndarray], card: ModelCard) -> np.ndarray:
    """The (images, h, w) probabilities of an ONNX on onnxruntime's CPU provider, one image at a time."""
    session = cpu_session(model_path)
    return np.stack([probability(session, batch, card) for batch in batches])


def cpu_session(model_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def probability(session, batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """The (h, w) probability of one preprocessed image."""
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})[:1]
    return activate(logits[0, 0], card)


def rms_change(candidate: np.ndarray, reference: np.ndarray) -> float:
    """The root mean square difference of two probability maps (or stacks of them)."""
    return float(np.sqrt(np.mean(np.square(candidate - reference, dtype=np.float64))))
