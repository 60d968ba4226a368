"""PyTorch as a runtime backend, so a trained model stands beside its exported forms in eval and parity."""

from __future__ import annotations

import numpy as np
import torch

from edgeseg.core.card import ModelCard


class TorchBackend:
    """``edgeseg.core.segmenter.Backend`` over an eager PyTorch model: a context manager with one ``infer()``.

    ``precision="fp16"`` runs the network in float16 (on the CPU too, where PyTorch emulates it
    slowly): a reference for what an FP16 export should give. Inputs and outputs stay float32.
    """

    def __init__(self, model: torch.nn.Module, card: ModelCard, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"TorchBackend precision must be 'fp32' or 'fp16', got {precision!r}")
        self.card = card
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"  # torch-cpu or torch-cuda, as edgeseg.core.names.TORCH_BACKENDS
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.eval().to(self.device, dtype=self.dtype)

    def __enter__(self) -> TorchBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (PyTorch frees the model with it); here so a Segmenter can close any backend."""

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) at the card's input size -> float32 logits (N, 1, H, W)."""
        height, width = self.card.input_size
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2:] != (height, width):
            raise ValueError(
                f"expected a float32 batch (N, 3, {height}, {width}) as edgeseg.core.preprocess makes it, "
                f"got {batch.shape}"
            )
        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            logits = self.model(inputs)
        return logits.float().cpu().numpy()
