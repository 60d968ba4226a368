"""The network: an smp FPN built from the model card, and its weights on disk (safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgeseg.core.card import CardError, ModelCard, load_card
from edgeseg.core.files import atomic_output
from edgeseg.core.names import WEIGHTS_FILENAME


def build_model(card: ModelCard) -> torch.nn.Module:
    """An untrained network with the card's architecture; it outputs logits (N, 1, H, W)."""
    import segmentation_models_pytorch as smp

    return smp.create_model(
        card.architecture,
        encoder_name=card.encoder,
        encoder_weights=None,
        classes=len(card.classes),
        **card.architecture_kwargs,
    )


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """Write the model's weights as safetensors, atomically."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_output(path) as temporary:
        save_file(state, str(temporary))
    return Path(path)


def load_model(run_dir: str | Path, weights: str = WEIGHTS_FILENAME) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild a trained model from a run directory (card.json + weights); eval mode, on the CPU."""
    run_dir = Path(run_dir)
    card = load_card(run_dir)
    weights_path = run_dir / weights
    if not weights_path.is_file():
        raise CardError(f"{weights_path}: no weights here. A run directory made by `edgeseg train` holds {weights}.")
    model = build_model(card)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as error:
        raise CardError(f"{weights_path}: these weights do not fit the card's model ({error})") from None
    return model.eval(), card


def initial_card(run_dir: str | Path, card: ModelCard) -> ModelCard:
    """The card of a trained run to fine-tune from; it must describe the same network as ``card``."""
    source = load_card(run_dir)
    mine = (card.architecture, card.encoder, card.architecture_kwargs, card.classes)
    theirs = (source.architecture, source.encoder, source.architecture_kwargs, source.classes)
    if mine != theirs:
        raise CardError(
            f"--init-weights {run_dir}: that run is {source.architecture} with {source.encoder} "
            f"{source.architecture_kwargs}, this one {card.architecture} with {card.encoder} "
            f"{card.architecture_kwargs}; give the same --encoder and --decoder-channels as that run"
        )
    return source


def load_run_weights(model: torch.nn.Module, run_dir: str | Path) -> None:
    """Every weight of a trained run into ``model`` (fine-tuning); initial_card has checked they fit."""
    weights_path = Path(run_dir) / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise CardError(
            f"--init-weights {run_dir}: no {WEIGHTS_FILENAME} here; pass a run directory made by `edgeseg train`"
        )
    model.load_state_dict(load_file(str(weights_path)))
