"""A compact copy of an ISIC-layout data set, small enough to travel to a borrowed GPU machine.

    python benchmarks/compact_isic.py ../shared/data/isic2018 .gpu-data/isic2018 [--size 256] [--quality 90]

Training only ever sees an image at the network's input size: ``edgeseg.train.dataset.decode_train``
resizes each one once with the runtime's geometry (a stretch, area interpolation) and its mask with
``resize_mask``. So the train split is written already at that size, the same way (masks exactly as
``decode_train`` would make them, images re-encoded as JPEG at ``--quality``), and decoding the copy
gives the same masks and the same images up to that JPEG step (about 42 dB PSNR at quality 90).
The val split is copied byte for byte, so validation during training is scored on the real images at
their own resolution. The shared set shrinks from 84 MB to about 40 MB; the splits come along.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edgeseg.core.card import ModelCard
from edgeseg.core.data import discover_samples, require_usable
from edgeseg.core.files import read_image, read_mask, write_bytes_atomic
from edgeseg.core.preprocess import resize_to_input
from edgeseg.train.dataset import resize_mask


def encoded(extension: str, pixels: np.ndarray, parameters: list[int]) -> bytes:
    ok, buffer = cv2.imencode(extension, pixels, parameters)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {extension} image")
    return buffer.tobytes()


def compact_pair(image: Path, mask: Path, target: Path, source: Path, card: ModelCard, quality: int) -> None:
    resized_image = resize_to_input(read_image(image), card)
    resized_mask = resize_mask(read_mask(mask), card).astype(np.uint8) * 255
    write_bytes_atomic(
        target / image.relative_to(source).with_suffix(".jpg"),
        encoded(".jpg", resized_image, [cv2.IMWRITE_JPEG_QUALITY, quality]),
    )
    write_bytes_atomic(target / mask.relative_to(source).with_suffix(".png"), encoded(".png", resized_mask, []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="ISIC-layout folder with splits/train.txt and splits/val.txt")
    parser.add_argument("target", type=Path, help="folder to create (must not exist)")
    default_side = ModelCard().input_size[0]  # the card's default input, which `edgeseg train` uses unless --size
    parser.add_argument(
        "--size", type=int, default=default_side, help=f"the training input side the copy is made for [{default_side}]"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the resized train images [90]")
    args = parser.parse_args()
    if args.target.exists():
        sys.exit(f"Error: {args.target} already exists; remove it or name another folder")
    require_usable(args.source)
    card = ModelCard(input_size=(args.size, args.size))
    train = discover_samples(args.source, split="train")
    val = discover_samples(args.source, split="val")
    for sample in tqdm(train, desc="train (resized)", unit="pair"):
        compact_pair(Path(sample.image), Path(sample.mask), args.target, args.source, card, args.quality)
    for sample in tqdm(val, desc="val (copied)", unit="pair"):
        for path in (Path(sample.image), Path(sample.mask)):
            destination = args.target / path.relative_to(args.source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
    shutil.copytree(args.source / "splits", args.target / "splits")
    size = sum(path.stat().st_size for path in args.target.rglob("*") if path.is_file())
    print(
        f"{len(train)} train pairs at {args.size} px, {len(val)} val pairs as they are: "
        f"{size / 1e6:.1f} MB in {args.target}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
