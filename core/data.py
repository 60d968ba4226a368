"""Finding and checking labelled data: pairs of a dermoscopic image and its lesion mask.

Two layouts are recognised under a data root:

    ISIC (the official download)            plain
      *_Input/ISIC_0000000.jpg                images/<id>.jpg  (.jpeg .png .bmp .tif .tiff .webp)
      *_GroundTruth/ISIC_0000000_segmentation.png
                                              masks/<id>.png  or  masks/<id>_segmentation.png

An image's id is its file name without the extension; a mask's id is its name without `.png` and
without a trailing `_segmentation`, so both mask namings work in both layouts. Masks must be PNG
(lossless): 0 for skin, 255 for lesion. Every `*_Input` and `*_GroundTruth` folder is read, so the
official training and validation downloads can sit side by side.

Splits are text files, one id a line (blank lines and `#` comments skipped), named <split>.txt in
<root>/splits/ or in another folder given as `split_dir`.

`discover_samples` only lists files (fast); `check_dataset` decodes every file and reports each
problem with its file and fix; `require_usable` is the gate that train and eval pass through.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import header_refusal
from edgeseg.core.names import IMAGE_SUFFIXES
from edgeseg.core.progress import progress as track

MASK_SUFFIX = ".png"
MASK_TAG = "_segmentation"
SPLITS_FOLDER = "splits"
# The locked split (splits/test.txt): scored once per model about to ship, never trained on or chosen with.
LOCKED_SPLIT = "test"

LAYOUT_HELP = (
    "expected the official ISIC layout (*_Input/<id>.jpg with *_GroundTruth/<id>_segmentation.png) or "
    "a plain layout (images/<id>.jpg with masks/<id>.png or masks/<id>_segmentation.png)"
)

ERROR = "error"
WARNING = "warning"

# kind -> (severity, what the summary table calls it). Errors make the data set unusable.
PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    "no_pairs": (ERROR, "no image/mask pairs at all"),
    "missing_mask": (ERROR, "images without masks"),
    "missing_image": (ERROR, "masks without images"),
    "duplicate_id": (ERROR, "ids with two image or two mask files"),
    "unreadable": (ERROR, "unreadable files"),
    "truncated": (ERROR, "truncated files"),
    "size_mismatch": (ERROR, "image/mask size mismatches"),
    "not_binary": (ERROR, "masks not binary (0/255)"),
    "split_id_missing": (ERROR, "split ids with no image or mask"),
    "split_overlap": (ERROR, "ids in more than one split"),
    "empty_mask": (WARNING, "empty masks (no lesion)"),
    "image_converted": (WARNING, "images converted on reading (grey/RGBA/16-bit)"),
    "mask_converted": (WARNING, "masks converted on reading (colour/16-bit)"),
    "duplicate_image": (WARNING, "identical images under two ids"),
    "split_repeat": (WARNING, "ids listed twice in a split file"),
    "not_in_split": (WARNING, "pairs in no split file"),
    "ignored_file": (WARNING, "image files that are ignored"),
}


class DataError(EdgesegError, ValueError):
    """A data set that cannot be used as given; the message lists every problem and its fix."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class Problem:
    kind: str
    path: Path
    message: str
    fix: str

    @property
    def severity(self) -> str:
        return PROBLEM_KINDS[self.kind][0]

    def describe(self) -> str:
        return f"{self.severity.upper():7}  {self.kind:16} {self.path}: {self.message}. Fix: {self.fix}."

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "path": str(self.path),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class DataReport:
    """What `check_dataset` found. `samples` holds the pairs that have no error, sorted by id."""

    root: Path
    layout: str
    split: str | None
    pairs_found: int
    samples: list[Sample]
    split_counts: dict[str, int]  # usable pairs per split file
    problems: list[Problem]
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == WARNING]

    @property
    def usable(self) -> bool:
        return bool(self.samples) and not self.errors

    def counts(self) -> dict[str, int]:
        found = Counter(problem.kind for problem in self.problems)
        return {kind: found[kind] for kind in PROBLEM_KINDS}

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "split": self.split,
            "usable": self.usable,
            "pairs_found": self.pairs_found,
            "usable_pairs": len(self.samples),
            "split_counts": self.split_counts,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "counts": self.counts(),
            "problems": [problem.to_dict() for problem in self.problems],
            "seconds": round(self.seconds, 2),
        }

    def summary_table(self) -> str:
        scope = f", split {self.split}" if self.split else ""
        rows = [("pairs found", self.pairs_found), ("usable pairs", len(self.samples))]
        rows += [(f"  in split {name}", count) for name, count in self.split_counts.items()]
        for kind, count in self.counts().items():
            severity, title = PROBLEM_KINDS[kind]
            rows.append((f"{severity:7}  {title}", count))
        width = max(len(label) for label, _ in rows)
        lines = [f"{self.root} ({self.layout} layout{scope}), checked in {self.seconds:.1f} s", ""]
        lines += [f"  {label:<{width}}  {count:>6}" for label, count in rows]
        return "\n".join(lines)

    def verdict(self) -> str:
        if self.usable:
            return f"Usable: {len(self.samples)} pairs ({len(self.warnings)} warnings)."
        return f"NOT usable: {len(self.errors)} errors; fix them (listed above) and check again."

    def text(self) -> str:
        """The summary table, every problem with its file and fix, and the verdict."""
        lines = [self.summary_table(), ""]
        if self.problems:
            lines.append(f"{len(self.errors)} errors, {len(self.warnings)} warnings:")
            lines += [problem.describe() for problem in self.errors + self.warnings]
            lines.append("")
        lines.append(self.verdict())
        return "\n".join(lines)


# ---- discovery (no decoding) ----------------------------------------------------------------


@dataclass
class _Layout:
    name: str
    image_dirs: list[Path]
    mask_dirs: list[Path]


@dataclass
class _Files:
    images: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    masks: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    ignored: list[Path] = field(default_factory=list)


def _find_layout(root: Path) -> _Layout:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; {LAYOUT_HELP}")
    isic_images = sorted(path for path in root.glob("*_Input") if path.is_dir())
    isic_masks = sorted(path for path in root.glob("*_GroundTruth") if path.is_dir())
    if isic_images or isic_masks:
        return _Layout("ISIC", isic_images, isic_masks)
    plain_images = [root / "images"] if (root / "images").is_dir() else []
    plain_masks = [root / "masks"] if (root / "masks").is_dir() else []
    if plain_images or plain_masks:
        return _Layout("plain", plain_images, plain_masks)
    raise DataError(f"{root}: found no image or mask folder; {LAYOUT_HELP}")


def _mask_id(path: Path) -> str:
    return path.stem.removesuffix(MASK_TAG)


def _list_files(layout: _Layout) -> _Files:
    files = _Files()
    for folder in layout.image_dirs:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                files.images[path.stem].append(path)
    for folder in layout.mask_dirs:
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() == MASK_SUFFIX:
                files.masks[_mask_id(path)].append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                files.ignored.append(path)
    return files


def _splits_folder(root: Path, split_dir: Path | None) -> Path:
    return Path(split_dir) if split_dir is not None else root / SPLITS_FOLDER


def _split_file(root: Path, split: str, split_dir: Path | None) -> Path:
    path = _splits_folder(root, split_dir) / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"{path}: no such split file; write the split's ids there, one a line, or give --split-dir")
    return path


def read_split(path: Path) -> list[str]:
    """The ids in a split file, in file order: one a line, blank lines and `#` comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def locked_test_ids(root: str | os.PathLike, split_dir: Path | None = None) -> set[str]:
    """The ids of the locked test split (LOCKED_SPLIT.txt in the data's split folder and in ``split_dir``).

    Never trained on and never chosen with: training refuses a train or val split that holds one of them.
    """
    folders = {Path(root) / SPLITS_FOLDER, *([Path(split_dir)] if split_dir is not None else [])}
    files = [folder / f"{LOCKED_SPLIT}.txt" for folder in folders]
    return {sample_id for path in files if path.is_file() for sample_id in read_split(path)}


def discover_samples(root: str | os.PathLike, split: str | None = None, split_dir: Path | None = None) -> list[Sample]:
    """The complete image/mask pairs under root (only those of `split` if given), sorted by id.

    Lists files without decoding them. Incomplete or broken pairs are left out silently: use
    `check_dataset` to see them, or `require_usable` to refuse a data set that has any.
    """
    root = Path(root)
    files = _list_files(_find_layout(root))
    ids = sorted(set(files.images) & set(files.masks))
    if split is not None:
        wanted = set(read_split(_split_file(root, split, split_dir)))
        ids = [sample_id for sample_id in ids if sample_id in wanted]
    return [Sample(sample_id, files.images[sample_id][0], files.masks[sample_id][0]) for sample_id in ids]


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A random train/val split of ``ids`` (the same for the same ids and seed), each part sorted."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"the validation share must lie strictly between 0 and 1, got {val_fraction}")
    if len(ids) < 2:
        raise DataError(
            f"{len(ids)} image/mask pair(s): a split needs at least one for training and one for validation"
        )
    shuffled = sorted(ids)
    np.random.default_rng(seed).shuffle(shuffled)
    val_count = min(len(shuffled) - 1, max(1, round(len(shuffled) * val_fraction)))
    return sorted(shuffled[val_count:]), sorted(shuffled[:val_count])


def write_splits(
    root: str | os.PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    split_dir: Path | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write <split_dir>/train.txt and val.txt for a data set that has none (never over existing ones unless asked)."""
    from edgeseg.core.files import write_text_atomic

    root = Path(root)
    folder = _splits_folder(root, split_dir)
    paths = {name: folder / f"{name}.txt" for name in ("train", "val")}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise DataError(f"{', '.join(existing)} already exist(s); keep them, or pass --overwrite to replace them")
    train_ids, val_ids = split_ids([sample.id for sample in discover_samples(root)], val_fraction, seed)
    header = (
        f"# edgeseg data split --val-fraction {val_fraction:g} --seed {seed}: "
        f"{len(train_ids)} train, {len(val_ids)} val\n"
    )
    for name, ids in (("train", train_ids), ("val", val_ids)):
        write_text_atomic(paths[name], header + "".join(f"{sample_id}\n" for sample_id in ids))
    return paths


# ---- validation (decodes every file) --------------------------------------------------------


def _missing_end(data: bytes) -> str | None:
    """Name the end marker a JPEG or PNG lacks when the file was cut short, else None.

    Some decoders return a partial image for a truncated file with only a warning, so the bytes are
    checked. A JPEG's compressed data never holds FF D9 (an FF there is always followed by 00 or a
    restart marker), so the end-of-image marker must follow the last start-of-scan marker; trailing
    bytes after it (as some cameras write) are allowed.
    """
    if data.startswith(b"\xff\xd8"):
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            return "JPEG end-of-image marker (FF D9)"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        if data.rfind(b"IEND") < data.rfind(b"IDAT"):
            return "PNG end chunk (IEND)"
    return None


def _load(path: Path, flags: int) -> tuple[np.ndarray | None, bytes, Problem | None]:
    """Read and decode a file: (array, its bytes, None), or (None, bytes, the problem)."""
    refetch = "copy or download the file again, or remove the pair"
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, b"", Problem("unreadable", path, f"cannot read the file ({error.strerror or error})", refetch)
    if not data:
        return None, data, Problem("unreadable", path, "the file is empty", refetch)
    missing = _missing_end(data)
    if missing:
        return None, data, Problem("truncated", path, f"the file is cut short: it ends without its {missing}", refetch)
    refusal = header_refusal(data)  # before decoding: an unknown format, no size, or a decompression bomb
    if refusal:
        return None, data, Problem("unreadable", path, refusal.reason, f"{refusal.fix}; or remove the pair")
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as error:
        return None, data, Problem("unreadable", path, f"OpenCV refused to decode it ({error})", refetch)
    if array is None:
        message = "OpenCV cannot decode it (corrupt or an unknown format)"
        return None, data, Problem("unreadable", path, message, refetch)
    return array, data, None


def _conversions(array: np.ndarray, colour: bool) -> list[str]:
    """How reading will change an image (colour=True) or a mask (colour=False), in words."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    changes = []
    if colour and channels == 1:
        changes.append("grey, will be read as 3-channel colour")
    if colour and channels == 4:
        changes.append("has an alpha channel, which will be dropped")
    if not colour and channels > 1:
        changes.append(f"has {channels} channels, will be read as grey")
    if array.dtype != np.uint8:
        changes.append(f"is {array.dtype}, will be scaled to 8-bit")
    return changes


def _value_list(values: np.ndarray) -> str:
    shown = ", ".join(str(int(value)) for value in values[:8])
    return f"{{{shown}{', ...' if len(values) > 8 else ''}}} ({len(values)} values)"


@dataclass
class _PairCheck:
    problems: list[Problem]
    image_digest: str | None


def _check_pair(sample: Sample) -> _PairCheck:
    problems = []
    image, image_bytes, problem = _load(sample.image, cv2.IMREAD_UNCHANGED)
    if problem:
        problems.append(problem)
    mask, mask_bytes, problem = _load(sample.mask, cv2.IMREAD_UNCHANGED)
    if problem:
        problems.append(problem)
    digest = hashlib.sha256(image_bytes).hexdigest() if image is not None else None

    if image is not None:
        changes = _conversions(image, colour=True)
        if changes:
            problems.append(
                Problem(
                    "image_converted",
                    sample.image,
                    "; ".join(changes),
                    "none needed; or convert it to 8-bit RGB yourself to control how",
                )
            )
    if mask is not None:
        changes = _conversions(mask, colour=False)
        if changes:
            problems.append(
                Problem(
                    "mask_converted",
                    sample.mask,
                    "; ".join(changes),
                    "save it as an 8-bit single-channel PNG with 0 and 255",
                )
            )
            grey = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)  # as read_mask reads it
            mask = grey if grey is not None else mask
        problems += _mask_problems(sample, mask)
    if image is not None and mask is not None and image.shape[:2] != mask.shape[:2]:
        image_size = f"{image.shape[1]}x{image.shape[0]}"
        mask_size = f"{mask.shape[1]}x{mask.shape[0]}"
        problems.append(
            Problem(
                "size_mismatch",
                sample.mask,
                f"mask is {mask_size} but its image is {image_size}",
                f"make the mask {image_size} like its image; the ISIC scorer and training need that",
            )
        )
    return _PairCheck(problems, digest)


def _mask_problems(sample: Sample, mask: np.ndarray) -> list[Problem]:
    counts = np.bincount(mask.ravel(), minlength=256)
    values = np.flatnonzero(counts)
    found = set(values.tolist())
    if not found <= {0, 255}:
        if found <= {0, 1}:
            fix = "it looks like a 0/1 mask: multiply it by 255 (only values above 128 count as lesion)"
        else:
            fix = "rewrite it with 0 for skin and 255 for lesion, e.g. np.where(mask > 128, 255, 0)"
        message = f"mask values are {_value_list(values)}, expected only 0 and 255"
        return [Problem("not_binary", sample.mask, message, fix)]
    if counts[129:].sum() == 0:
        return [
            Problem(
                "empty_mask",
                sample.mask,
                "the mask marks no lesion pixel",
                "none needed if the image truly shows no lesion; otherwise redo the mask",
            )
        ]
    return []


def _pairing_problems(layout: _Layout, files: _Files, scope: set[str]) -> list[Problem]:
    """Problems found from file names alone: missing halves, two files for one id, ignored files."""
    problems = []
    mask_home = layout.mask_dirs[0] if layout.mask_dirs else "a *_GroundTruth or masks/ folder"
    image_home = layout.image_dirs[0] if layout.image_dirs else "an *_Input or images/ folder"
    for sample_id in sorted(scope):
        images, masks = files.images.get(sample_id, []), files.masks.get(sample_id, [])
        for group in (images, masks):
            if len(group) > 1:
                names = ", ".join(path.name for path in group)
                problems.append(
                    Problem(
                        "duplicate_id",
                        group[0],
                        f"id {sample_id} has {len(group)} files: {names}",
                        "keep one file per id",
                    )
                )
        if images and not masks:
            problems.append(
                Problem(
                    "missing_mask",
                    images[0],
                    "the image has no mask",
                    f"add its mask as {sample_id}{MASK_TAG}.png in {mask_home}, or remove the image",
                )
            )
        if masks and not images:
            problems.append(
                Problem(
                    "missing_image",
                    masks[0],
                    "the mask has no image",
                    f"add its image as {sample_id}.jpg in {image_home}, or remove the mask",
                )
            )
    for path in files.ignored:
        problems.append(
            Problem(
                "ignored_file",
                path,
                "not a PNG, so not read as a mask",
                "save masks as PNG (lossless; JPEG blurs the 0/255 edge)",
            )
        )
    return problems


def _split_problems(files: _Files, splits: dict[str, Path], split_ids: dict[str, list[str]]) -> list[Problem]:
    """Ids listed twice, ids with no file at all, and ids in two splits."""
    problems = []
    member_of: dict[str, list[str]] = defaultdict(list)
    for name, ids in split_ids.items():
        for sample_id, times in Counter(ids).items():
            member_of[sample_id].append(name)
            if times > 1:
                problems.append(
                    Problem(
                        "split_repeat", splits[name], f"id {sample_id} is listed {times} times", "list each id once"
                    )
                )
            if sample_id not in files.images and sample_id not in files.masks:
                problems.append(
                    Problem(
                        "split_id_missing",
                        splits[name],
                        f"id {sample_id} has no image and no mask",
                        "remove the id from the split file, or add its image and mask",
                    )
                )
    for sample_id, names in sorted(member_of.items()):
        if len(names) > 1:
            message = f"id {sample_id} is in splits {', '.join(names)}"
            problems.append(
                Problem(
                    "split_overlap",
                    splits[names[0]],
                    message,
                    "keep each id in one split, or validation measures training images",
                )
            )
    return problems


def _unsplit_pairs(files: _Files, split_ids: dict[str, list[str]]) -> list[Problem]:
    """Pairs that no split file lists (when there are split files): training by split leaves them out."""
    listed = {sample_id for ids in split_ids.values() for sample_id in ids}
    return [
        Problem(
            "not_in_split",
            files.images[sample_id][0],
            "the pair is in no split file",
            f"add {sample_id} to a split file, or ignore this if leaving it out is meant",
        )
        for sample_id in sorted(set(files.images) & set(files.masks) - listed)
    ]


def _duplicate_images(samples: list[Sample], digests: dict[str, str], split_of: dict[str, str]) -> list[Problem]:
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.id in digests:
            by_digest[digests[sample.id]].append(sample)
    problems = []
    for group in by_digest.values():
        if len(group) > 1:
            described = ", ".join(f"{sample.id} ({split_of.get(sample.id, 'no split')})" for sample in group)
            problems.append(
                Problem(
                    "duplicate_image",
                    group[1].image,
                    f"identical bytes under ids {described}",
                    "remove the copies; a copy in two splits has validation measure a training image",
                )
            )
    return problems


def _checked_splits(root: Path, split: str | None, split_dir: Path | None) -> dict[str, Path]:
    """The split files to check: `split`'s alone if given, else every one in the split folder."""
    splits_folder = _splits_folder(root, split_dir)
    if split_dir is not None and not splits_folder.is_dir():
        raise DataError(f"{splits_folder}: no such split folder")
    if split is not None:
        return {split: _split_file(root, split, split_dir)}
    return {path.stem: path for path in sorted(splits_folder.glob("*.txt"))} if splits_folder.is_dir() else {}


def _check_pairs(candidates: list[Sample], workers: int | None, progress: bool) -> list[_PairCheck]:
    """Every pair decoded and checked on a pool of threads, in the order of candidates."""
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        checked = pool.map(_check_pair, candidates)
        return list(track(checked, total=len(candidates), desc="checking pairs", unit="pair", enabled=progress))


def check_dataset(
    root: str | os.PathLike,
    split: str | None = None,
    split_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> DataReport:
    """Decode and check every pair under root (only `split`'s if given) and report every problem.

    Raises DataError only when there is nothing to check: no recognisable layout, or a split or
    split folder that does not exist. Everything else is a Problem in the report.
    """
    started = time.perf_counter()
    root = Path(root)
    layout = _find_layout(root)
    files = _list_files(layout)

    splits = _checked_splits(root, split, split_dir)
    split_ids = {name: read_split(path) for name, path in splits.items()}
    split_of = {sample_id: name for name, ids in split_ids.items() for sample_id in ids}

    every_id = set(files.images) | set(files.masks)
    scope = every_id & set(split_ids[split]) if split is not None else every_id
    problems = _pairing_problems(layout, files, scope) + _split_problems(files, splits, split_ids)
    if split is None and split_ids:
        problems += _unsplit_pairs(files, split_ids)

    paired = sorted(scope & set(files.images) & set(files.masks))
    candidates = [  # pairs with one file on each side; two files for one id is already an error
        Sample(sample_id, files.images[sample_id][0], files.masks[sample_id][0])
        for sample_id in paired
        if len(files.images[sample_id]) == 1 and len(files.masks[sample_id]) == 1
    ]
    checks = _check_pairs(candidates, workers, progress)

    samples, digests = [], {}
    for sample, check in zip(candidates, checks, strict=True):
        problems += check.problems
        if check.image_digest:
            digests[sample.id] = check.image_digest
        if not any(problem.severity == ERROR for problem in check.problems):
            samples.append(sample)
    problems += _duplicate_images(candidates, digests, split_of)
    if not paired:
        problems.append(Problem("no_pairs", root, f"found no image with its mask ({layout.name} layout)", LAYOUT_HELP))

    usable_ids = {sample.id for sample in samples}
    split_counts = {name: len(usable_ids & set(ids)) for name, ids in split_ids.items()}
    seconds = time.perf_counter() - started
    return DataReport(root, layout.name, split, len(paired), samples, split_counts, problems, seconds)


def require_usable(
    root: str | os.PathLike, split: str | None = None, split_dir: Path | None = None, progress: bool = True
) -> list[Sample]:
    """The checked samples of root (of `split` if given); DataError listing every problem if any is an error."""
    report = check_dataset(root, split=split, split_dir=split_dir, progress=progress)
    if not report.usable:
        listed = "\n".join(problem.describe() for problem in report.errors + report.warnings)
        command = f"edgeseg data check {report.root}" + (f" --split {split}" if split else "")
        raise DataError(f"{report.root} is not usable ({len(report.errors)} errors); see `{command}`:\n{listed}")
    return report.samples
