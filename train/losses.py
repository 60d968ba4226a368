"""Losses: Dice (the paper's) and Dice + binary cross-entropy."""

from __future__ import annotations

import torch

LOSSES = ("dice", "dice+bce")


class DiceBCELoss(torch.nn.Module):
    """Dice loss plus pixel-wise binary cross-entropy, both on logits; BCE gives steadier early gradients."""

    def __init__(self) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


def build_loss(name: str) -> torch.nn.Module:
    """The loss of that name, taking logits (N, 1, H, W) and a 0/1 float target of the same shape."""
    import segmentation_models_pytorch as smp

    if name == "dice":
        return smp.losses.DiceLoss(mode="binary", from_logits=True)
    if name == "dice+bce":
        return DiceBCELoss()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
