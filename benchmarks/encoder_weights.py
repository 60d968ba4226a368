"""An encoder's ImageNet weights as a safetensors file, for `edgeseg train --encoder-weights PATH` on a machine
without them.

    python benchmarks/encoder_weights.py .gpu-data/lite0-imagenet-encoder.safetensors \
        [--encoder tu-tf_efficientnet_lite0] [--half]

A borrowed GPU machine has PyTorch but neither network nor the 17 MB weights package; this writes the
encoder's state dict exactly as `--encoder-weights imagenet` would load it here (12 MB for lite0),
and checks that loading the file gives the same tensors. `--half` stores them as float16, half the size
(lite2's encoder: 8.9 MB instead of 17.7), so that two encoders and the data fit the 64 MiB the GPU tool
carries; loading casts them back to the model's float32, which changes each weight by at most 2^-11 of
itself, below what the first training steps move it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from edgeseg.core.files import atomic_output
from edgeseg.train.encoders import LITE0_ENCODER, load_encoder_weights


def fpn(encoder: str) -> torch.nn.Module:
    return smp.create_model("FPN", encoder_name=encoder, encoder_weights=None, classes=1)


def stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    if half and tensor.is_floating_point():
        tensor = tensor.half()
    return tensor.contiguous()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--encoder", default=LITE0_ENCODER, help=f"smp encoder name [{LITE0_ENCODER}]")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    args = parser.parse_args()
    if args.out.suffix != ".safetensors":
        sys.exit(f"Error: {args.out}: name the file *.safetensors (edgeseg train --encoder-weights expects it)")
    model = fpn(args.encoder)
    load_encoder_weights(model, args.encoder, "imagenet")
    state = {name: stored(tensor, args.half) for name, tensor in model.encoder.state_dict().items()}
    with atomic_output(args.out) as temporary:
        save_file(state, str(temporary))
    check = fpn(args.encoder)
    load_encoder_weights(check, args.encoder, str(args.out))
    loaded = check.encoder.state_dict()
    if any(not torch.equal(tensor.to(loaded[name].dtype), loaded[name]) for name, tensor in state.items()):
        sys.exit(f"Error: {args.out} does not load back as the weights it was written from")
    print(f"{args.encoder}: {len(state)} tensors, {args.out.stat().st_size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
