"""Data discovery and validation: edgeseg.core.data and `edgeseg data check`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.data import DataError, Sample, check_dataset, discover_samples, read_split, require_usable

IMAGES = "ISIC2018_Task1-2_Training_Input"
MASKS = "ISIC2018_Task1_Training_GroundTruth"


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def lesion_image(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def lesion_mask(size: tuple[int, int] = (40, 48)) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    cv2.circle(mask, (size[1] // 2, size[0] // 2), min(size) // 3, 255, -1)
    return mask


def make_isic(root: Path, ids: list[str], splits: dict[str, list[str]] | None = None) -> Path:
    """Small random image/mask pairs in the official ISIC layout, with optional split files."""
    for index, sample_id in enumerate(ids):
        write(root / IMAGES / f"{sample_id}.jpg", lesion_image(index))
        write(root / MASKS / f"{sample_id}_segmentation.png", lesion_mask())
    for name, members in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{name}.txt").write_text("".join(f"{sample_id}\n" for sample_id in members))
    return root


def ids(count: int) -> list[str]:
    return [f"ISIC_{number:07d}" for number in range(count)]


def kinds(report) -> dict[str, list[str]]:
    """Problem kind -> names of the files it was reported on."""
    found: dict[str, list[str]] = {}
    for problem in report.problems:
        found.setdefault(problem.kind, []).append(Path(problem.path).name)
    return found


# ---- the real data ------------------------------------------------------------------------


@pytest.mark.isic
def test_real_isic_data_is_usable_with_its_splits(isic_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["data", "check", str(isic_dir), "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["usable"] and report["errors"] == 0
    assert report["pairs_found"] == report["usable_pairs"] == 2335
    assert report["split_counts"] == {"train": 1845, "val": 232, "test": 258}
    assert "Usable: 2335 pairs" in result.output


@pytest.mark.isic
def test_real_isic_discovery_by_split_reads_the_split_file(isic_dir: Path) -> None:
    everything = discover_samples(isic_dir)
    val = discover_samples(isic_dir, split="val")
    assert len(everything) == 2335
    assert [sample.id for sample in val] == sorted(read_split(isic_dir / "splits" / "val.txt"))
    assert len(val) == 232
    first = val[0]
    assert first.image == isic_dir / IMAGES / f"{first.id}.jpg"
    assert first.mask == isic_dir / MASKS / f"{first.id}_segmentation.png"


# ---- a broken copy ------------------------------------------------------------------------


def test_check_names_each_broken_file_and_exits_non_zero(tmp_path: Path) -> None:
    root = make_isic(tmp_path / "data", ids(6), {"train": ids(6)})
    deleted, truncated, resized, grey_values = ids(4)
    (root / MASKS / f"{deleted}_segmentation.png").unlink()
    jpeg = root / IMAGES / f"{truncated}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-200])
    smaller = cv2.resize(lesion_mask(), (24, 20), interpolation=cv2.INTER_NEAREST)  # nearest: still 0/255
    write(root / MASKS / f"{resized}_segmentation.png", smaller)
    three_values = lesion_mask()
    three_values[:5] = 128
    write(root / MASKS / f"{grey_values}_segmentation.png", three_values)

    result = CliRunner().invoke(main, ["data", "check", str(root), "--json", "-"])

    assert result.exit_code == 1
    lines = result.output.splitlines()

    def line_about(name: str) -> str:
        matching = [line for line in lines if name in line and line.startswith("ERROR")]
        assert len(matching) == 1, f"{name} not reported once:\n{result.output}"
        return matching[0]

    assert "missing_mask" in line_about(f"{deleted}.jpg")
    assert "truncated" in line_about(f"{truncated}.jpg")
    assert "size_mismatch" in line_about(f"{resized}_segmentation.png")
    assert "24x20" in line_about(f"{resized}_segmentation.png")
    assert "{0, 128, 255}" in line_about(f"{grey_values}_segmentation.png")
    assert "NOT usable" in result.output
    assert "Fix:" in line_about(f"{deleted}.jpg")


def test_json_report_lists_problems_and_usable_pairs(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(3))
    (root / MASKS / "ISIC_0000001_segmentation.png").unlink()
    report = check_dataset(root, progress=False)
    document = report.to_dict()
    assert document["usable"] is False
    assert document["pairs_found"] == document["usable_pairs"] == 2
    assert document["counts"]["missing_mask"] == 1
    assert document["problems"] == [
        {
            "kind": "missing_mask",
            "severity": "error",
            "path": str(root / IMAGES / "ISIC_0000001.jpg"),
            "message": "the image has no mask",
            "fix": f"add its mask as ISIC_0000001_segmentation.png in {root / MASKS}, or remove the image",
        }
    ]
    json.dumps(document)  # serialisable as it is


def test_require_usable_raises_data_error_listing_every_problem(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(4))
    (root / IMAGES / "ISIC_0000002.jpg").unlink()
    write(root / MASKS / "ISIC_0000003_segmentation.png", (lesion_mask() > 0).astype(np.uint8))  # 0/1 mask
    with pytest.raises(DataError) as raised:
        require_usable(root, progress=False)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "2 errors" in message
    assert "ISIC_0000002_segmentation.png" in message and "missing_image" in message
    assert "ISIC_0000003_segmentation.png" in message and "multiply it by 255" in message


def test_require_usable_returns_the_checked_samples(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(3))
    samples = require_usable(root, progress=False)
    assert samples == [
        Sample(sample_id, root / IMAGES / f"{sample_id}.jpg", root / MASKS / f"{sample_id}_segmentation.png")
        for sample_id in ids(3)
    ]


# ---- what is a warning and what is an error -------------------------------------------------


def test_conversions_empty_masks_and_duplicates_are_warnings(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(6))
    write(root / IMAGES / "ISIC_0000000.jpg", cv2.cvtColor(lesion_image(0), cv2.COLOR_BGR2GRAY))
    (root / IMAGES / "ISIC_0000001.jpg").unlink()
    write(root / IMAGES / "ISIC_0000001.png", cv2.cvtColor(lesion_image(1), cv2.COLOR_BGR2BGRA))
    (root / IMAGES / "ISIC_0000002.jpg").unlink()
    write(root / IMAGES / "ISIC_0000002.png", lesion_image(2).astype(np.uint16) * 257)
    write(root / MASKS / "ISIC_0000003_segmentation.png", np.zeros((40, 48), np.uint8))
    (root / IMAGES / "ISIC_0000005.jpg").write_bytes((root / IMAGES / "ISIC_0000004.jpg").read_bytes())

    report = check_dataset(root, progress=False)

    assert report.usable and len(report.samples) == 6
    found = kinds(report)
    assert sorted(found["image_converted"]) == ["ISIC_0000000.jpg", "ISIC_0000001.png", "ISIC_0000002.png"]
    assert found["empty_mask"] == ["ISIC_0000003_segmentation.png"]
    assert found["duplicate_image"] == ["ISIC_0000005.jpg"]
    messages = " ".join(problem.message for problem in report.problems)
    assert "grey" in messages and "alpha" in messages and "uint16" in messages
    assert all(problem.severity == "warning" for problem in report.problems)


def test_a_colour_mask_is_converted_and_its_grey_values_checked(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(2))
    write(root / MASKS / "ISIC_0000000_segmentation.png", cv2.cvtColor(lesion_mask(), cv2.COLOR_GRAY2BGR))
    report = check_dataset(root, progress=False)
    assert report.usable
    assert kinds(report) == {"mask_converted": ["ISIC_0000000_segmentation.png"]}


def test_truncated_and_garbage_files_are_errors_but_trailing_bytes_are_not(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(4))
    mask = root / MASKS / "ISIC_0000000_segmentation.png"
    mask.write_bytes(mask.read_bytes()[:-30])  # cut inside the last chunks
    (root / IMAGES / "ISIC_0000001.jpg").write_bytes(b"not an image at all")
    (root / MASKS / "ISIC_0000002_segmentation.png").write_bytes(b"")
    padded = root / IMAGES / "ISIC_0000003.jpg"
    padded.write_bytes(padded.read_bytes() + b"\x00" * 500)  # some cameras pad after the end marker

    report = check_dataset(root, progress=False)

    assert kinds(report) == {
        "truncated": ["ISIC_0000000_segmentation.png"],
        "unreadable": ["ISIC_0000001.jpg", "ISIC_0000002_segmentation.png"],
    }
    assert [sample.id for sample in report.samples] == ["ISIC_0000003"]
    assert not report.usable


def test_two_files_for_one_id_and_non_png_masks(tmp_path: Path) -> None:
    root = make_isic(tmp_path, ids(2))
    write(root / IMAGES / "ISIC_0000000.png", lesion_image(0))
    write(root / MASKS / "ISIC_0000001_segmentation.jpg", lesion_mask())
    report = check_dataset(root, progress=False)
    found = kinds(report)
    assert found["duplicate_id"] == ["ISIC_0000000.jpg"]
    assert found["ignored_file"] == ["ISIC_0000001_segmentation.jpg"]
    assert [sample.id for sample in report.samples] == ["ISIC_0000001"]
    assert not report.usable


# ---- layouts and splits -------------------------------------------------------------------


def test_plain_layout_accepts_both_mask_namings(tmp_path: Path) -> None:
    write(tmp_path / "images" / "mole_a.jpg", lesion_image(0))
    write(tmp_path / "images" / "mole_b.png", lesion_image(1))
    write(tmp_path / "masks" / "mole_a.png", lesion_mask())
    write(tmp_path / "masks" / "mole_b_segmentation.png", lesion_mask())
    (tmp_path / "images" / "notes.txt").write_text("ignored: not an image")

    samples = discover_samples(tmp_path)
    assert samples == [
        Sample("mole_a", tmp_path / "images" / "mole_a.jpg", tmp_path / "masks" / "mole_a.png"),
        Sample("mole_b", tmp_path / "images" / "mole_b.png", tmp_path / "masks" / "mole_b_segmentation.png"),
    ]
    report = check_dataset(tmp_path, progress=False)
    assert report.layout == "plain" and report.usable and report.problems == []
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path)])
    assert result.exit_code == 0 and "plain layout" in result.output


def test_discover_by_split_returns_only_that_split(tmp_path: Path) -> None:
    root = make_isic(tmp_path / "data", ids(5), {"train": ids(5)[:3], "val": ids(5)[3:]})
    assert [sample.id for sample in discover_samples(root, split="val")] == ids(5)[3:]
    assert [sample.id for sample in discover_samples(root, split="train")] == ids(5)[:3]

    other = tmp_path / "other-splits"
    other.mkdir()
    (other / "val.txt").write_text("# held out\nISIC_0000000\n\nISIC_0000004  # last\n")
    assert [sample.id for sample in discover_samples(root, split="val", split_dir=other)] == [ids(5)[0], ids(5)[4]]

    report = check_dataset(root, split="val", progress=False)
    assert report.usable and [sample.id for sample in report.samples] == ids(5)[3:]
    assert report.split_counts == {"val": 2}
    with pytest.raises(DataError, match="test.txt: no such split file"):
        discover_samples(root, split="test")


def test_split_problems(tmp_path: Path) -> None:
    all_ids = ids(5)
    root = make_isic(tmp_path, all_ids, {"train": [*all_ids[:3], all_ids[0], "ISIC_0009999"], "val": all_ids[2:4]})
    report = check_dataset(root, progress=False)
    by_kind = {kind: [problem.message for problem in report.problems if problem.kind == kind] for kind in kinds(report)}
    assert by_kind == {
        "split_repeat": ["id ISIC_0000000 is listed 2 times"],
        "split_id_missing": ["id ISIC_0009999 has no image and no mask"],
        "split_overlap": ["id ISIC_0000002 is in splits train, val"],
        "not_in_split": ["the pair is in no split file"],  # ISIC_0000004
    }
    assert not report.usable
    assert report.split_counts == {"train": 3, "val": 2}


def test_a_folder_without_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="images/<id>.jpg"):
        discover_samples(tmp_path)
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1 and "found no image or mask folder" in result.output

    (tmp_path / "images").mkdir()
    report = check_dataset(tmp_path, progress=False)
    assert not report.usable and kinds(report) == {"no_pairs": [tmp_path.name]}


def test_help_explains_with_an_example() -> None:
    result = CliRunner().invoke(main, ["data", "check", "--help"])
    assert result.exit_code == 0
    assert "edgeseg data check data/isic2018" in result.output


def test_data_split_writes_a_reproducible_split_and_never_overwrites(tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli import main
    from edgeseg.core.data import discover_samples, read_split
    from edgeseg.core.synthetic import generate_dataset

    root = tmp_path / "download"
    generate_dataset(root, n=20, size=48, seed=3)
    for split_file in (root / "splits").glob("*.txt"):
        split_file.unlink()  # as the official ISIC download comes: no splits/

    result = CliRunner().invoke(main, ["data", "split", str(root), "--val", "0.25", "--seed", "1"])
    assert result.exit_code == 0, result.output
    train, val = read_split(root / "splits" / "train.txt"), read_split(root / "splits" / "val.txt")
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert set(train) | set(val) == {sample.id for sample in discover_samples(root)}
    assert len(discover_samples(root, split="train")) == 15  # train reads them

    again = CliRunner().invoke(main, ["data", "split", str(root), "--val", "0.25", "--seed", "1"])
    assert again.exit_code == 1 and "already exist" in again.output and "--overwrite" in again.output
    other = CliRunner().invoke(main, ["data", "split", str(root), "--val", "0.25", "--seed", "2", "--overwrite"])
    assert other.exit_code == 0 and read_split(root / "splits" / "val.txt") != val
    CliRunner().invoke(main, ["data", "split", str(root), "--val", "0.25", "--seed", "1", "--overwrite"])
    assert read_split(root / "splits" / "val.txt") == val  # the same seed, the same split
