"""Synthetic dermoscopy data: deterministic, exact binary masks, skin-like images, the ISIC layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.synthetic import IMAGE_FOLDER, MASK_FOLDER, generate_dataset, make_sample

N_VARIETY = 30  # enough images to see the variety (border contact, vignettes, hairs)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def variety() -> list[tuple[np.ndarray, np.ndarray]]:
    return [make_sample(seed=11, index=index, size=128) for index in range(N_VARIETY)]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", n=6, size=64, seed=1)
    generate_dataset(tmp_path / "b", n=6, size=64, seed=1)
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(first) == 6 * 2 + 3  # images, masks, two split files, README
    assert first == second


def test_image_k_does_not_depend_on_n(tmp_path: Path) -> None:
    few = generate_dataset(tmp_path / "few", n=2, size=64, seed=1)
    many = generate_dataset(tmp_path / "many", n=5, size=64, seed=1)
    for small, large in zip(few, many, strict=False):  # few has 2 images: the first 2 of many
        assert small.id == large.id
        assert small.image.read_bytes() == large.image.read_bytes()
        assert small.mask.read_bytes() == large.mask.read_bytes()


def test_different_seed_gives_different_images() -> None:
    for index in range(3):
        image_a, mask_a = make_sample(seed=1, index=index, size=64)
        image_b, mask_b = make_sample(seed=2, index=index, size=64)
        assert not np.array_equal(image_a, image_b)
        assert not np.array_equal(mask_a, mask_b)


def test_written_masks_are_binary_single_channel_and_match_images(synthetic_dir: Path) -> None:
    masks = sorted((synthetic_dir / MASK_FOLDER).glob("*_segmentation.png"))
    assert len(masks) == 24
    for path in masks:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(synthetic_dir / IMAGE_FOLDER / path.name.replace("_segmentation.png", ".jpg")))
        assert mask.ndim == 2 and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 255}, path
        assert image.shape == (96, 96, 3)


def test_lesion_sizes_are_sane_and_some_touch_the_border(variety) -> None:
    fractions = [mask.mean() for _, mask in variety]
    assert min(fractions) > 0.005 and max(fractions) < 0.8, fractions
    assert max(fractions) - min(fractions) > 0.2  # varying size
    touching = [bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()) for _, mask in variety]
    assert 1 <= sum(touching) < N_VARIETY


def test_images_look_like_skin_with_a_darker_lesion(variety) -> None:
    kernel = np.ones((9, 9), np.uint8)
    for image, mask in variety:
        lit = image.mean(axis=2) > 60  # leave out the dermatoscope's dark rim
        ring = (cv2.dilate(mask.astype(np.uint8), kernel, iterations=2) > 0) & ~mask & lit
        skin = ~mask & lit
        blue, green, red = image[skin].mean(axis=0)
        assert 140 < red < 250 and red > green > blue, (red, green, blue)  # warm, pinkish-beige
        if ring.sum() > 50 and (mask & lit).sum() > 50:
            grey = image.mean(axis=2)
            assert grey[mask & lit].mean() < grey[ring].mean() - 10


def test_some_images_show_the_dermatoscope_rim(variety) -> None:
    dark_corner = [image[:4, :4].mean() < 40 for image, _ in variety]
    assert 1 <= sum(dark_corner) < N_VARIETY


def test_cli_writes_the_isic_layout_and_splits(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = CliRunner().invoke(main, ["synth", str(out), "--n", "10", "--image-size", "64", "--seed", "3"])
    assert result.exit_code == 0, result.output
    images = sorted(path.stem for path in (out / IMAGE_FOLDER).glob("ISIC_*.jpg"))
    masks = sorted(path.name.removesuffix("_segmentation.png") for path in (out / MASK_FOLDER).glob("*.png"))
    assert images == masks == [f"ISIC_{9000000 + index}" for index in range(10)]
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert len(val) == 2 and len(train) == 8
    assert sorted(train + val) == images
    assert "synthetic" in (out / "README.md").read_text().lower()
    assert "8 train / 2 val" in result.output


def test_the_data_module_accepts_the_output(synthetic_dir: Path) -> None:
    from edgeseg.core.data import discover_samples, require_usable

    train = require_usable(synthetic_dir, split="train")
    val = discover_samples(synthetic_dir, split="val")
    assert len(train) + len(val) == 24
    assert {sample.id for sample in train}.isdisjoint(sample.id for sample in val)


def test_refuses_a_foreign_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--n", "2", "--image-size", "64"])
    assert result.exit_code != 0
    assert "not empty" in result.output and "--overwrite" in result.output
    assert not (tmp_path / IMAGE_FOLDER).exists()

    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--n", "2", "--image-size", "64", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / IMAGE_FOLDER).glob("*.jpg"))) == 2


def test_rerun_into_an_earlier_output_leaves_exactly_the_new_set(tmp_path: Path) -> None:
    generate_dataset(tmp_path, n=5, size=64, seed=0)
    generate_dataset(tmp_path, n=2, size=64, seed=0)
    assert len(list((tmp_path / IMAGE_FOLDER).iterdir())) == 2
    assert len(list((tmp_path / MASK_FOLDER).iterdir())) == 2


@pytest.mark.parametrize("arguments", [dict(n=0, size=64), dict(n=2, size=16), dict(n=2, size=64, val_fraction=1.0)])
def test_rejects_bad_arguments(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, seed=0, **arguments)
