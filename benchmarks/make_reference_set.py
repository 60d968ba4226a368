"""Make edgeseg's reference set (models/reference/): a few real ISIC 2018 pairs that ship with edgeseg.

`edgeseg export` checks parity and calibrates INT8 on them when no data folder is named, so the
mission's `edgeseg export --fp16` works on a fresh install. Drawn at random (a fixed seed) from the
512x512 crops of the shared data's val split (parity) and train split (calibration); never from its
locked test split. The files are copied byte for byte, in the official ISIC layout with split files.

    python benchmarks/make_reference_set.py ../shared/data/isic2018 models/reference
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import click

from edgeseg.core.data import discover_samples, read_split
from edgeseg.core.files import write_text_atomic

SEED = 20261206
PARITY_IMAGES = 40  # from val: the rules on a mean judge from 20 (edgeseg.export.parity.MEAN_RULES_MIN_IMAGES)
CALIBRATION_IMAGES = 64  # from train: `edgeseg export --calib-n`'s default
CROP_SIDE = 512  # the crops only: the full-resolution images weigh megabytes each


def crop_ids(root: Path, split: str) -> list[str]:
    """The ids of ``split`` whose image is a 512x512 crop (the data's MANIFEST.tsv gives every size)."""
    sizes = {}
    for line in (root / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        sample_id, width, height = line.split("\t")[:3]
        sizes[sample_id] = (int(width), int(height))
    return sorted(i for i in read_split(root / "splits" / f"{split}.txt") if sizes[i] == (CROP_SIDE, CROP_SIDE))


@click.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def main(source: Path, target: Path) -> None:
    if target.exists():
        sys.exit(f"Error: {target} already exists; remove it or name another folder")
    rng = random.Random(SEED)
    chosen = {
        "val": sorted(rng.sample(crop_ids(source, "val"), PARITY_IMAGES)),
        "train": sorted(rng.sample(crop_ids(source, "train"), CALIBRATION_IMAGES)),
    }
    locked = set(read_split(source / "splits" / "test.txt"))
    assert not locked & {i for ids in chosen.values() for i in ids}, "the locked test split is never used"
    wanted = {i for ids in chosen.values() for i in ids}
    for sample in discover_samples(source):
        if sample.id in wanted:
            for path in (sample.image, sample.mask):  # the official folder names, as in the source
                copy = target / path.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
    for split, ids in chosen.items():
        write_text_atomic(target / "splits" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    click.echo(f"{target}: {PARITY_IMAGES} val and {CALIBRATION_IMAGES} train pairs (seed {SEED})")


if __name__ == "__main__":
    main()
