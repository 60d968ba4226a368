"""The fp32 ONNX form: the trained network exported with its card in the metadata.

PyTorch is imported inside ``export_onnx`` only: the other forms import ``set_card_metadata`` from
here, and on a Jetson (no PyTorch) they are built from an existing ONNX. This module stands on
half_weights (the weights stored as float16), never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeseg.core.card import ModelCard
from edgeseg.core.files import atomic_output
from edgeseg.core.names import CARD_METADATA_KEY
from edgeseg.export.onnx_metadata import set_metadata

if TYPE_CHECKING:
    import torch

OPSET = 20


def export_onnx(
    model: torch.nn.Module, card: ModelCard, path: str | Path, dynamic: bool = False, half_weights: bool = False
) -> Path:
    """Export ``model`` (logits out) to ONNX at ``path``, check it, and embed the card.

    The input shape is the card's static (1, 3, H, W) unless ``dynamic`` makes batch, height and
    width free. The legacy TorchScript exporter is used: the dynamo exporter matches it to ~5e-6 but
    took over ten minutes for a dynamic-shape export of this network. ``half_weights`` stores the
    weights as float16, cast back to float32 in the graph (edgeseg.export.half_weights): half the file.
    """
    import onnx
    import torch

    from edgeseg.export.half_weights import store_weights_float16

    height, width = card.input_size
    names = card.tensor_names
    dummy = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            names.input: {0: "batch", 2: "height", 3: "width"},
            names.output: {0: "batch", 2: "height", 3: "width"},
        }
    path = Path(path)
    with atomic_output(path) as temporary, torch.no_grad():
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(temporary),
            input_names=[names.input],
            output_names=[names.output],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(temporary))
        if half_weights:
            store_weights_float16(proto)
        onnx.checker.check_model(proto, full_check=True)
        set_card_metadata(proto, card)
        onnx.save(proto, str(temporary))
    return path


def set_card_metadata(proto, card: ModelCard) -> None:
    """Store the card in the model's metadata_props, replacing any card already there."""
    set_metadata(proto, CARD_METADATA_KEY, card.to_json())
