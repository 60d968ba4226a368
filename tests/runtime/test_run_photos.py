"""`edgeseg run` on photos: overlays, masks and results.csv in a results folder, a line of figures per image.

The default model (models/default/model.onnx) segments a few small synthetic dermoscopy-like images.
"""

from __future__ import annotations

import csv
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.lesion_measurements import Measurements
from edgeseg.core.names import default_model_path
from edgeseg.core.segmenter import Segmentation
from edgeseg.core.synthetic import make_sample
from edgeseg.runtime.photos import RESULTS_CSV, image_line, numbered_results_folder

LINE = re.compile(
    r"^(?P<label>\S+)  (?:lesion (?P<percent>[\d.]+)% of image(?: \(\d+ regions\))?, "
    r"(?P<box>\d+x\d+) px box, max diameter (?P<diameter>\d+) px(?: \((?P<mm>[\d.]+) mm\))?"
    r"|no lesion found), (?P<ms>\d+) ms$"
)


def lesion_photo(index: int, height: int = 256) -> np.ndarray:
    image, _ = make_sample(2026, index, 256)
    return image[:height]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two images of the same name in two subfolders, a plain one, a corrupt one; a hidden folder and an old results
    folder inside, which are not walked into."""
    folder = tmp_path / "photos"
    for sub in ("a", "b", ".thumbnails", "edgeseg-results/run1"):
        (folder / sub).mkdir(parents=True)
    cv2.imwrite(str(folder / "a" / "ISIC_0000001.jpg"), lesion_photo(0))
    cv2.imwrite(str(folder / "b" / "ISIC_0000001.jpg"), lesion_photo(1, height=200))
    cv2.imwrite(str(folder / "plain.png"), np.full((120, 160, 3), (150, 170, 205), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(folder / ".thumbnails" / "small.jpg"), lesion_photo(2)[:64, :64])
    cv2.imwrite(str(folder / "edgeseg-results" / "run1" / "old_overlay.jpg"), lesion_photo(3))
    return folder


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_a_folder_gives_overlays_masks_results_csv_and_a_line_per_image(
    photos: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(str(default_model_path()), str(photos))
    assert result.exit_code == 0, result.output
    folder = Path("edgeseg-results/run1")
    names = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    assert names == [
        "a/ISIC_0000001_overlay.jpg",
        "a/ISIC_0000001_segmentation.png",
        "b/ISIC_0000001_overlay.jpg",
        "b/ISIC_0000001_segmentation.png",
        "plain_overlay.jpg",
        "plain_segmentation.png",
        RESULTS_CSV,
    ]
    mask = cv2.imread(str(folder / "b" / "ISIC_0000001_segmentation.png"), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(folder / "b" / "ISIC_0000001_overlay.jpg"))
    assert mask.shape == (200, 256) and set(np.unique(mask).tolist()) <= {0, 255} and mask.any()
    assert overlay.shape == (200, 256, 3)

    lines = result.stdout.splitlines()
    assert [LINE.match(line)["label"] for line in lines] == ["a/ISIC_0000001.jpg", "b/ISIC_0000001.jpg", "plain.png"]
    rows = read_csv(folder / RESULTS_CSV)
    assert [row["image"] for row in rows] == ["a/ISIC_0000001.jpg", "b/ISIC_0000001.jpg", "plain.png"]
    for line, row in zip(lines, rows, strict=True):
        match = LINE.match(line)
        if row["lesion_present"] == "1":
            assert float(match["percent"]) == pytest.approx(float(row["area_percent"]), abs=0.05)
            assert match["box"] == f"{row['bbox_width']}x{row['bbox_height']}"
            assert int(match["diameter"]) == round(float(row["max_diameter_px"]))
        else:
            assert "no lesion found" in line and row["area_px"] == "0"
    assert rows[1]["lesion_present"] == "1" and int(rows[1]["area_px"]) == np.count_nonzero(mask)
    assert rows[2]["lesion_present"] == "0", "a photo of plain skin has no lesion"

    skipped = [record.getMessage() for record in caplog.records if record.getMessage().startswith("skipped ")]
    assert len(skipped) == 1 and "broken.jpg: " in skipped[0]
    assert result.stderr.splitlines()[-1] == "results: edgeseg-results/run1/ (3 overlays and masks, results.csv)"


def test_each_run_gets_the_next_numbered_folder_and_never_overwrites_one(
    photos: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = str(photos / "a" / "ISIC_0000001.jpg")
    assert run(str(default_model_path()), image).exit_code == 0
    first = Path("edgeseg-results/run1/ISIC_0000001_overlay.jpg").read_bytes()
    result = run(str(default_model_path()), image, "--mm-per-px", "0.05")
    assert result.exit_code == 0, result.output
    assert Path("edgeseg-results/run1/ISIC_0000001_overlay.jpg").read_bytes() == first, "run1 is left as it was"
    assert read_csv(Path("edgeseg-results/run2") / RESULTS_CSV)[0]["mm_per_px"] == "0.05"
    assert "results: edgeseg-results/run2/" in result.stderr
    assert re.search(r"max diameter \d+ px \(\d+\.\d mm\)", result.stdout), "millimetres where the scale is given"


def test_runs_started_together_each_get_their_own_folder(tmp_path: Path) -> None:
    parent = tmp_path / "edgeseg-results"
    (parent / "run2").mkdir(parents=True)  # a gap below is not reused: numbers only grow
    (parent / "run2-notes").mkdir()
    folders: list[Path] = []
    threads = [threading.Thread(target=lambda: folders.append(numbered_results_folder(parent))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(folder.name for folder in folders) == sorted(f"run{number}" for number in range(3, 11))


def test_save_an_image_path_takes_a_single_photos_overlay(photos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out" / "overlay.png"
    result = run("-o", str(target), str(photos / "b" / "ISIC_0000001.jpg"))
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(target)).shape == (200, 256, 3) and target.read_bytes().startswith(b"\x89PNG")
    assert len(result.stdout.splitlines()) == 1 and not Path("edgeseg-results").exists()
    assert result.stderr.splitlines()[-1] == f"overlay: {target}"

    refused = run("-o", str(tmp_path / "overlay.jpg"), str(photos))
    assert refused.exit_code == 2 and "a single photo's overlay" in refused.output and "give a folder" in refused.output
    unknown = run("-o", str(tmp_path / "overlay.avi"), str(photos))
    assert unknown.exit_code == 2 and ".mp4 or .webm" in unknown.output


def test_save_a_folder_follows_the_overwrite_rule(photos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    model = str(default_model_path())
    assert run(model, "--source", str(photos / "a"), "--save", str(results)).exit_code == 0
    assert (results / "ISIC_0000001_overlay.jpg").is_file() and len(read_csv(results / RESULTS_CSV)) == 1
    refused = run(model, "-s", str(photos / "a"), "-o", str(results))
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    replaced = run(model, "-s", str(photos), "-o", str(results), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert len(read_csv(results / RESULTS_CSV)) == 3 and (results / "b" / "ISIC_0000001_overlay.jpg").is_file()
    assert not Path("edgeseg-results").exists()


def test_a_results_folder_or_image_is_refused_for_a_video(video_20: Path, tmp_path: Path) -> None:
    result = run(str(default_model_path()), "-s", str(video_20), "--no-show", "-o", str(tmp_path / "results"))
    assert result.exit_code == 2 and "is for photos" in result.output and ".mp4 or .webm" in result.output


def test_a_positional_folder_is_the_source_with_the_default_model(photos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(str(photos / "a"))
    assert result.exit_code == 0, result.output
    assert "using edgeseg's default model" in result.stderr and "source: image" in result.stderr
    assert Path("edgeseg-results/run1/ISIC_0000001_segmentation.png").is_file()
    both = run(str(photos / "a"), "--source", str(photos))
    assert both.exit_code == 2 and "not both" in both.output
    run_folder = tmp_path / "runs" / "lite0"
    run_folder.mkdir(parents=True)
    (run_folder / "card.json").write_text("{}")
    assert "name its exported model" in run(str(run_folder)).output


def test_a_video_or_a_camera_index_as_the_first_word_says_how_to_give_it(video_20: Path) -> None:
    video = run(str(video_20))
    assert video.exit_code == 2 and f"--source {video_20}" in video.output
    camera = run("0")
    assert camera.exit_code == 2 and "--camera 0" in camera.output


def test_quiet_leaves_the_results_and_silences_the_notes(photos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    loud = run(str(photos / "a"), str(photos / "plain.png"))
    quiet = run("-q", str(photos / "a"), str(photos / "plain.png"))
    assert loud.exit_code == quiet.exit_code == 0
    assert "model model.onnx:" in loud.stderr and "images in" in loud.stderr
    assert [line.split("  ")[0] for line in quiet.stdout.splitlines()] == ["a/ISIC_0000001.jpg", "plain.png"]
    assert quiet.stderr.splitlines() == ["results: edgeseg-results/run2/ (2 overlays and masks, results.csv)"]


def test_the_line_of_figures_with_and_without_a_lesion() -> None:
    mask = np.zeros((100, 200), bool)
    lesion = Measurements(True, 2, 4680, (10, 20, 90, 60), 300.0, 101.4, 0.1, 46.8, 30.0, 10.14)
    found = Segmentation(
        np.zeros((100, 200), np.float32), mask, None, lesion, {"preprocess": 1.2, "inference": 25.1, "postprocess": 4.6}
    )
    assert image_line("ISIC_0012345.jpg", found, 200, 100) == (
        "ISIC_0012345.jpg  lesion 23.4% of image (2 regions), 90x60 px box, max diameter 101 px (10.1 mm), 31 ms"
    )
    none_found = Measurements(False, 0, 0, None, 0.0, 0.0)
    nothing = Segmentation(found.probability, mask, None, none_found, {"inference": 20.0})
    assert image_line("a/b.png", nothing, 200, 100) == "a/b.png  no lesion found, 20 ms"


def test_ctrl_c_leaves_a_complete_results_csv_for_the_images_done(tmp_path: Path) -> None:
    from edgeseg.runtime.backends import open_segmenter
    from edgeseg.runtime.photos import PhotoOutputs
    from edgeseg.runtime.run_loop import RunOptions, run_pipeline
    from edgeseg.runtime.sources import ImageFiles

    paths = []
    for index in range(4):
        paths.append(tmp_path / f"ISIC_000000{index}.jpg")
        cv2.imwrite(str(paths[-1]), lesion_photo(index))

    class InterruptedAfterTwo(ImageFiles):
        def frames(self):
            for number, frame in enumerate(super().frames()):
                if number == 2:
                    raise KeyboardInterrupt
                yield frame

    results = tmp_path / "results"
    with open_segmenter(default_model_path(), "onnxruntime-cpu") as segmenter:
        source = InterruptedAfterTwo(paths, "four photos")
        summary = run_pipeline(segmenter, source, RunOptions(photos=PhotoOutputs(results)))
    assert summary.interrupted and summary.frames == 2
    rows = read_csv(results / RESULTS_CSV)
    assert [row["image"] for row in rows] == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    assert sorted(path.name for path in results.iterdir()) == [
        "ISIC_0000000_overlay.jpg",
        "ISIC_0000000_segmentation.png",
        "ISIC_0000001_overlay.jpg",
        "ISIC_0000001_segmentation.png",
        RESULTS_CSV,
    ]
