"""Losses: Dice (the paper's), Dice + binary cross-entropy, and the Lovasz hinge (aimed at IoU itself)."""

from __future__ import annotations

import torch

from edgeseg.core.names import LOSSES


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
    if name == "lovasz":
        # Per image: the ISIC score is the mean of per-image Jaccards, and the Lovasz hinge is a surrogate of each.
        return smp.losses.LovaszLoss(mode="binary", per_image=True, from_logits=True)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
