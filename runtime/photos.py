"""What `edgeseg run` gives for photos: an overlay and a mask per image, a line of figures, a results table.

Each image gets ``NAME_overlay.jpg`` (the overlay a photo has: the outline and the lesion's size, no live
speed lines) and ``NAME_segmentation.png`` (0/255 at the image's own size, ISIC naming) in a results
folder: ``edgeseg-results/runN`` (the next free number, never one that exists) or the folder --save
names. NAME keeps the image's subfolders below the folder given, so images of the same name in two
subfolders never write over each other. ``results.csv`` holds one row per image with its figures: CSV
because it opens as it is in a spreadsheet or pandas (--jsonl gives the nested per-frame records for
programs). It is written atomically once the run ends, Ctrl-C included, with a row for every image done.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from edgeseg.core.drawing import encode_overlay
from edgeseg.core.files import write_bytes_atomic, write_mask, write_text_atomic
from edgeseg.core.names import MASK_SUFFIX, OVERLAY_SUFFIX
from edgeseg.core.segmenter import Segmentation
from edgeseg.runtime.sources import RESULTS_FOLDER, Frame

RESULTS_CSV = "results.csv"
OVERLAY_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what --save may name for a single image's overlay
CSV_COLUMNS = (
    "image",
    "overlay",
    "mask",
    "width",
    "height",
    "lesion_present",
    "regions",
    "area_px",
    "area_percent",
    "bbox_x",
    "bbox_y",
    "bbox_width",
    "bbox_height",
    "perimeter_px",
    "max_diameter_px",
    "mm_per_px",
    "area_mm2",
    "perimeter_mm",
    "max_diameter_mm",
    "ms",
)
STAGES = ("preprocess", "inference", "postprocess")  # a photo's time: the three stages of the Segmenter


@dataclass
class PhotoOutputs:
    """Where a photo run's results go; the line per image is printed whichever is given."""

    folder: Path | None = None  # overlays, masks and results.csv
    overlay_file: Path | None = None  # --save IMAGE: the one image's overlay, nothing else
    lines_to_stderr: bool = False  # stdout holds the --jsonl records ('-')

    @property
    def needs_overlay(self) -> bool:
        return self.folder is not None or self.overlay_file is not None


def numbered_results_folder(parent: Path = Path(RESULTS_FOLDER)) -> Path:
    """A new, empty ``parent/runN``: one more than the highest N there, created here (a run started at the same
    moment that takes that number first makes this one take the next)."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(path.name[3:]) for path in parent.glob("run*") if path.name[3:].isdigit()]
    number = max(taken, default=0) + 1
    while True:
        folder = parent / f"run{number}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def total_ms(segmentation: Segmentation) -> float:
    return sum(segmentation.timings_ms.get(stage, 0.0) for stage in STAGES)


def image_line(label: str, segmentation: Segmentation, width: int, height: int) -> str:
    """One image's figures, as a line:
    ``ISIC_0012345.jpg  lesion 23.4% of image, 412x380 px box, max diameter 530 px (10.6 mm), 31 ms``."""
    measurements = segmentation.measurements
    timing = f"{total_ms(segmentation):.0f} ms"
    if not measurements.lesion_present or measurements.bbox is None:
        return f"{label}  no lesion found, {timing}"
    percent = 100.0 * measurements.area_px / (width * height)
    regions = f" ({measurements.regions} regions)" if measurements.regions > 1 else ""
    _, _, box_width, box_height = measurements.bbox
    diameter = f"max diameter {measurements.max_diameter_px:.0f} px"
    if measurements.max_diameter_mm is not None:
        diameter += f" ({measurements.max_diameter_mm:.1f} mm)"
    return f"{label}  lesion {percent:.1f}% of image{regions}, {box_width}x{box_height} px box, {diameter}, {timing}"


def csv_row(label: str, names: tuple[str, str] | None, segmentation: Segmentation, width: int, height: int) -> dict:
    """One image's row of results.csv: the image, its output files (relative to the folder) and its figures."""
    measurements = segmentation.measurements
    box = measurements.bbox or ("", "", "", "")

    def rounded(value: float | None, places: int = 2):
        return "" if value is None else round(value, places)

    return {
        "image": label,
        "overlay": names[0] if names else "",
        "mask": names[1] if names else "",
        "width": width,
        "height": height,
        "lesion_present": int(measurements.lesion_present),
        "regions": measurements.regions,
        "area_px": measurements.area_px,
        "area_percent": round(100.0 * measurements.area_px / (width * height), 3),
        "bbox_x": box[0],
        "bbox_y": box[1],
        "bbox_width": box[2],
        "bbox_height": box[3],
        "perimeter_px": rounded(measurements.perimeter_px),
        "max_diameter_px": rounded(measurements.max_diameter_px),
        "mm_per_px": "" if measurements.mm_per_px is None else measurements.mm_per_px,
        "area_mm2": rounded(measurements.area_mm2, 3),
        "perimeter_mm": rounded(measurements.perimeter_mm, 3),
        "max_diameter_mm": rounded(measurements.max_diameter_mm, 3),
        "ms": round(total_ms(segmentation), 1),
    }


class PhotoResults:
    """Writes each photo's outputs and line as it is finished (on the run loop's finisher thread); ``close``
    writes results.csv with a row for every image finished."""

    def __init__(self, outputs: PhotoOutputs) -> None:
        self.outputs = outputs
        self.rows: list[dict] = []  # one per image finished

    def add(self, frame: Frame, segmentation: Segmentation, overlay: np.ndarray | None) -> None:
        height, width = frame.image.shape[:2]
        label = frame.label or frame.name
        names = None
        folder = self.outputs.folder
        # The overlay is drawn whenever a folder or an overlay file asks for it (PhotoOutputs.needs_overlay).
        if folder is not None:
            names = (frame.name + OVERLAY_SUFFIX, frame.name + MASK_SUFFIX)
            if overlay is not None:
                write_bytes_atomic(folder / names[0], encode_overlay(folder / names[0], overlay))
            write_mask(folder / names[1], segmentation.mask)
        if self.outputs.overlay_file is not None and overlay is not None:
            write_bytes_atomic(self.outputs.overlay_file, encode_overlay(self.outputs.overlay_file, overlay))
        self.rows.append(csv_row(label, names, segmentation, width, height))
        click.echo(image_line(label, segmentation, width, height), err=self.outputs.lines_to_stderr)

    def close(self) -> None:
        """results.csv in the results folder, when there is one and an image was done."""
        if self.outputs.folder is None or not self.rows:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.outputs.folder / RESULTS_CSV, text.getvalue())
