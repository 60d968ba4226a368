"""Synthetic dermoscopy-like images with exact lesion masks, for the demo and fast tests.

Each image is built from simple layers, one function each: textured skin, an irregular pigmented
lesion with colour variegation, hairs, air bubbles and glare, and the dark circular field of view of
a dermatoscope. The mask is the lesion's own shape, so hairs or glare drawn over the lesion do not
change it. Image ``k`` of a seed is the same whatever ``n`` is: each image has its own random
generator, seeded from ``(seed, k)``.

The data are written in the official ISIC 2018 layout with ids ``ISIC_9000000 + k``: real ISIC ids
are far below 9000000, so a synthetic file can never pass for a real one. They exercise the code
paths; they are not a substitute for the real data in any accuracy work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.data import Sample
from edgeseg.core.files import write_bytes_atomic, write_text_atomic
from edgeseg.core.progress import progress as track

IMAGE_FOLDER = "ISIC2018_Task1-2_Training_Input"
MASK_FOLDER = "ISIC2018_Task1_Training_GroundTruth"
FIRST_ID = 9_000_000  # real ISIC ids stay far below this; see the module docstring
MAX_IMAGES = 1_000_000  # keeps ids at 7 digits, as ISIC's are
MIN_SIZE = 32
JPEG_QUALITY = 95
README_TITLE = "# Synthetic dermoscopy-like data (edgeseg synth)"

Color = tuple[float, float, float]  # BGR in [0, 1], OpenCV's channel order


# --- small helpers ------------------------------------------------------------------------------


def sample_id(index: int) -> str:
    return f"ISIC_{FIRST_ID + index:07d}"


def rgb(red: float, green: float, blue: float) -> np.ndarray:
    """A colour written as RGB (as one reads it), stored as BGR float32."""
    return np.array([blue, green, red], dtype=np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (size x size, float32, about unit variance) with ``cells`` bumps across."""
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    # Upsample a slightly larger grid and crop, so the field has no edge artefacts of the resize.
    step = size / cells
    full = int(round(step * (cells + 3)))
    field = cv2.resize(grid, (full, full), interpolation=cv2.INTER_CUBIC)
    offset = int(round(step * 1.5))
    field = field[offset : offset + size, offset : offset + size]
    return field / max(float(field.std()), 1e-6)


def blend(image: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Paint ``color`` (one BGR colour or an image) over ``image`` with per-pixel opacity ``alpha``."""
    alpha = alpha[..., None]
    return image * (1.0 - alpha) + color * alpha


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance in pixels to the mask's boundary: positive inside, negative outside."""
    mask_u8 = mask.astype(np.uint8)
    inside = cv2.distanceTransform(mask_u8, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - mask_u8, cv2.DIST_L2, 3)
    return inside - outside


# --- the layers ---------------------------------------------------------------------------------


def skin(rng: np.random.Generator, size: int) -> np.ndarray:
    """Skin-tone background: an uneven tone, faint reddish blotches, fine texture, pores, grain."""
    red = rng.uniform(0.80, 0.95)
    green = red * rng.uniform(0.72, 0.86)
    blue = green * rng.uniform(0.78, 0.95)
    base = rgb(red, green, blue)

    tone = 1.0 + 0.04 * smooth_noise(rng, size, 3) + 0.015 * smooth_noise(rng, size, 10)
    tone += 0.012 * smooth_noise(rng, size, max(8, size // 5))  # the fine relief of the skin surface
    image = base * tone[..., None]

    redness = np.clip(smooth_noise(rng, size, int(rng.integers(3, 7))), 0, None) * rng.uniform(0.0, 0.035)
    image = image - redness[..., None] * rgb(0.0, 1.0, 0.7)  # less green and blue: redder

    pore_seeds = (rng.random((size, size)) < rng.uniform(0.0005, 0.003)).astype(np.float32)
    pores = cv2.GaussianBlur(pore_seeds, (0, 0), 0.8 * size / 256 + 0.3)
    pores = rng.uniform(0.08, 0.2) * pores / max(float(pores.max()), 1e-6)
    image = blend(image, base * rgb(0.75, 0.65, 0.6), pores)

    grain = rng.normal(0.0, 0.01, (size, size, 1)).astype(np.float32)
    return image + grain


def lesion_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """An irregular lesion as a boolean mask: a perturbed-radius blob, sometimes with merged lobes."""
    radius = size * math.sqrt(rng.uniform(0.004, 0.2))  # area roughly uniform: 1% to 60% of the image
    center = lesion_center(rng, size, radius)
    mask = np.zeros((size, size), np.uint8)
    fill_blob(mask, rng, center, radius)
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        angle = rng.uniform(0, 2 * math.pi)
        lobe_center = center + radius * rng.uniform(0.4, 0.9) * np.array([math.cos(angle), math.sin(angle)])
        fill_blob(mask, rng, lobe_center, radius * rng.uniform(0.3, 0.6))
    return mask.astype(bool)


def lesion_center(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """Where the lesion sits (x, y). About a quarter of the lesions run off the image, as in the
    (cropped) ISIC photos: the large ones, and those placed at an edge on purpose."""
    if rng.random() < 0.15:
        center = rng.uniform(0, size, 2)
        inset = rng.uniform(-0.1, 0.2) * radius  # the blob reaches at least 0.34 radius: never empty
        center[rng.integers(2)] = inset if rng.random() < 0.5 else size - inset
        return center
    margin = min(1.2 * radius, size / 2)
    return rng.uniform(margin, size - margin, 2)


def fill_blob(mask: np.ndarray, rng: np.random.Generator, center: np.ndarray, radius: float) -> None:
    """Fill a smooth random blob: an ellipse whose radius varies with a few low harmonics of the angle."""
    angles = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    scale = np.ones_like(angles)
    for harmonic in range(2, 8):
        scale += rng.uniform(0, 0.22 / harmonic**0.7) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    scale += 0.015 * rng.standard_normal(angles.size)  # a slightly ragged border
    stretch = rng.uniform(0.7, 1.0)
    tilt = rng.uniform(0, math.pi)
    x = radius * scale * np.cos(angles)
    y = radius * scale * np.sin(angles) * stretch
    points = np.stack([x * math.cos(tilt) - y * math.sin(tilt), x * math.sin(tilt) + y * math.cos(tilt)], axis=1)
    points = np.round((points + center) * 16).astype(np.int32)  # 4 fractional bits for a smooth edge
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=4)


def lesion_colors(rng: np.random.Generator, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion's own colours and opacity: variegated browns, a pigment network, dots, regression.

    The opacity is 0.5 exactly on the mask's boundary and rises inside, so the soft edge one sees in
    the image agrees with the exact mask.
    """
    size = mask.shape[0]
    distance = signed_distance(mask)
    depth = np.clip(distance / max(float(distance.max()), 1.0), 0, 1)  # 0 at the border, 1 deep inside

    # Darkness 0 (light tan) .. 1 (near black): a per-lesion level, patches, darker towards the centre.
    darkness = rng.uniform(0.05, 0.55) + 0.15 * smooth_noise(rng, size, int(rng.integers(3, 8)))
    darkness = darkness + rng.uniform(0.0, 0.4) * np.sqrt(depth)
    stops = [0.0, 0.35, 0.7, 1.0]
    ramp = [rgb(0.80, 0.58, 0.45), rgb(0.62, 0.38, 0.25), rgb(0.38, 0.21, 0.14), rgb(0.20, 0.11, 0.10)]
    darkness = np.clip(darkness, 0, 1)
    colors = np.stack([np.interp(darkness, stops, [c[channel] for c in ramp]) for channel in range(3)], axis=-1)
    colors = colors.astype(np.float32) * rgb(1.0, *rng.uniform(0.9, 1.08, 2))  # redder or greyer browns

    if rng.random() < 0.6:
        colors = pigment_network(rng, colors, size)
    if rng.random() < 0.4:
        colors = dots(rng, colors, mask)
    if rng.random() < 0.3:
        colors = regression(rng, colors, size)

    softness = rng.uniform(1.0, 5.0) * size / 256
    opacity = 1.0 / (1.0 + np.exp(-np.clip(distance / softness, -30, 30)))
    opacity *= rng.uniform(0.8, 1.0)  # some lesions are faint
    opacity = np.where(mask, np.maximum(opacity, 0.5), np.minimum(opacity, 0.5))
    return colors, opacity.astype(np.float32)


def pigment_network(rng: np.random.Generator, colors: np.ndarray, size: int) -> np.ndarray:
    """A darker reticular network over part of the lesion: the zero-crossings of a band-pass noise."""
    cells = max(4, int(size / rng.uniform(7, 12)))
    field = smooth_noise(rng, size, cells)
    lines = cv2.GaussianBlur(np.clip(1.0 - np.abs(field) / 0.8, 0, 1), (0, 0), 0.7 * size / 256)
    where = np.clip(smooth_noise(rng, size, 3) + 0.5, 0, 1)
    return colors * (1.0 - rng.uniform(0.2, 0.4) * lines * where)[..., None]


def dots(rng: np.random.Generator, colors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dark brown dots and globules scattered inside the lesion."""
    size = mask.shape[0]
    rows, cols = np.nonzero(mask)
    drawn = np.zeros((size, size), np.uint8)
    for pick in rng.integers(0, rows.size, int(rng.integers(3, 25))):
        radius = max(1, int(round(rng.uniform(0.6, 2.5) * size / 256)))
        cv2.circle(drawn, (int(cols[pick]), int(rows[pick])), radius, 255, -1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(drawn.astype(np.float32) / 255, (0, 0), 0.6 * size / 256)
    return blend(colors, rgb(0.25, 0.13, 0.10), rng.uniform(0.4, 0.8) * layer)


def regression(rng: np.random.Generator, colors: np.ndarray, size: int) -> np.ndarray:
    """Lighter, bluish-white regression areas in small patches of the lesion."""
    patches = np.clip(smooth_noise(rng, size, int(rng.integers(5, 10))) - 1.2, 0, 1)
    return blend(colors, rgb(0.78, 0.70, 0.72), np.clip(patches, 0, 0.4))


def hairs(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Thin dark curved hairs, none on many images and dozens on a few; they cross the lesion freely."""
    size = image.shape[0]
    count = int(rng.choice([0, 0, 0, 0, 1, 2, 3, 5, 8, 15, 30]))
    if count == 0:
        return image
    layer = np.zeros((size, size), np.uint8)
    thickness = max(1, int(round(size / 256 * rng.uniform(0.8, 1.8))))
    direction = rng.uniform(0, math.pi)  # hairs on one patch of skin tend to lie the same way
    for _ in range(count):
        start = rng.uniform(-0.1, 1.1, 2) * size
        angle = direction + rng.normal(0, 0.5)
        length = rng.uniform(0.3, 1.2) * size
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        bend = (start + end) / 2 + rng.normal(0, 0.2, 2) * length
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier
        points = np.round(curve * 16).astype(np.int32)
        cv2.polylines(layer, [points], False, 255, thickness, cv2.LINE_AA, shift=4)
    hair_color = rgb(0.22, 0.13, 0.08) * rng.uniform(0.4, 1.3)
    return blend(image, hair_color, rng.uniform(0.7, 0.95) * layer.astype(np.float32) / 255)


def bubbles_and_glare(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Now and then, air bubbles in the immersion fluid (bright rims) and specular glare spots."""
    size = image.shape[0]
    scale = size / 256
    if rng.random() < 0.2:
        rim_lines = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            center = tuple(int(v) for v in rng.uniform(0, size, 2))
            radius = int(rng.uniform(4, 25) * scale) + 1
            cv2.circle(rim_lines, center, radius, 255, max(1, int(round(scale))), cv2.LINE_AA)
        rims = cv2.GaussianBlur(rim_lines.astype(np.float32) / 255, (0, 0), 0.7 * scale)
        image = blend(image, rgb(0.97, 0.97, 0.97), np.clip(1.5 * rims, 0, 0.8))
    if rng.random() < 0.25:
        spot_discs = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            center = tuple(int(v) for v in rng.uniform(0, size, 2))
            cv2.circle(spot_discs, center, int(rng.uniform(1, 4) * scale) + 1, 1.0, -1, cv2.LINE_AA)
        spots = cv2.GaussianBlur(spot_discs, (0, 0), 1.2 * scale)
        image = blend(image, rgb(1.0, 1.0, 1.0), np.clip(spots * 1.5, 0, 0.9))
    return image


def field_of_view(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lens shading everywhere, and on 40% of the images the dermatoscope's dark circular rim."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    center = size / 2 + rng.normal(0, 0.05 * size, 2)
    radius = np.hypot(xx - center[0], yy - center[1]) / size
    image = image * (1.0 - rng.uniform(0.05, 0.25) * radius**2)[..., None]
    if rng.random() < 0.4:
        rim = rng.uniform(0.48, 0.68)
        width = rng.uniform(0.01, 0.04)
        darkening = np.clip((radius - rim) / width, 0, 1)
        image = blend(image, rgb(0.03, 0.03, 0.03) * rng.uniform(0.3, 2.0), darkening)
    return image


def make_sample(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the set drawn with ``seed``: (BGR uint8 image, boolean lesion mask)."""
    rng = np.random.default_rng([seed, index])
    image = skin(rng, size)
    mask = lesion_shape(rng, size)
    colors, opacity = lesion_colors(rng, mask)
    image = blend(image, colors, opacity)
    image = hairs(rng, image)
    image = bubbles_and_glare(rng, image)
    image = field_of_view(rng, image)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.8) * size / 256 + 0.2)  # optics are soft
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), mask


# --- writing the data set -----------------------------------------------------------------------


def encode(extension: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, encoded = cv2.imencode(extension, image, params or [])
    if not ok:
        raise OSError(f"OpenCV could not encode an image as {extension}")
    return encoded.tobytes()


def is_synthetic_output(folder: Path) -> bool:
    """True when ``folder`` was written by ``edgeseg synth`` (its README.md starts with our title)."""
    readme = folder / "README.md"
    try:
        return readme.read_text(encoding="utf-8").startswith(README_TITLE)
    except (OSError, UnicodeDecodeError):
        return False


def check_output_folder(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose a folder for the synthetic data")
    if not out_dir.exists() or overwrite or is_synthetic_output(out_dir) or not any(out_dir.iterdir()):
        return
    raise FileExistsError(
        f"{out_dir} is not empty and is not an earlier `edgeseg synth` output (no README.md of ours there). "
        "Choose a new or empty folder, or pass --overwrite (overwrite=True) to write the synthetic files into it."
    )


def remove_stale_samples(out_dir: Path, keep: set[str]) -> None:
    """Delete synthetic pairs of an earlier, larger run, so the folder holds exactly this set."""
    patterns = [(IMAGE_FOLDER, "ISIC_9??????.jpg", ""), (MASK_FOLDER, "ISIC_9??????_segmentation.png", "_segmentation")]
    for folder, pattern, suffix in patterns:
        for path in (out_dir / folder).glob(pattern):
            if path.stem.removesuffix(suffix) not in keep:
                path.unlink()


def split_ids(ids: list[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """A seeded random split: round(n * val_fraction) ids to validation, at least one of each when n >= 2."""
    n_val = round(len(ids) * val_fraction)
    if len(ids) >= 2 and 0 < val_fraction < 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:n_val].tolist())
    train = [sample_id for index, sample_id in enumerate(ids) if index not in chosen]
    val = [sample_id for index, sample_id in enumerate(ids) if index in chosen]
    return train, val


def readme_text(n: int, size: int, seed: int, n_train: int, n_val: int) -> str:
    return f"""{README_TITLE}

SYNTHETIC images, not photographs of skin: made by `edgeseg synth` to feed the demo and fast tests.
They are not a substitute for real dermoscopy data in any accuracy work.

- {n} images of {size}x{size} px, seed {seed}; regenerate with
  `edgeseg synth <this folder> --images {n} --image-size {size} --seed {seed}` (image k is the same for any n).
- Ids ISIC_{FIRST_ID:07d} upwards: real ISIC ids are far below 9000000, so none is a real image.
- Official ISIC 2018 layout: {IMAGE_FOLDER}/ISIC_nnnnnnn.jpg (JPEG quality {JPEG_QUALITY}) and
  {MASK_FOLDER}/ISIC_nnnnnnn_segmentation.png (0 = skin, 255 = lesion; the lesion's exact shape,
  hairs and glare over it included).
- splits/train.txt ({n_train} ids) and splits/val.txt ({n_val} ids), one id a line.
"""


def generate_dataset(
    out_dir: str | os.PathLike,
    n: int,
    size: int,
    seed: int,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Sample]:
    """Write ``n`` synthetic image/mask pairs in the ISIC layout, with splits and a README; return them.

    Refuses (FileExistsError) a non-empty folder that is not an earlier synthetic output unless
    ``overwrite``. Pairs of an earlier run that this one does not write are removed.
    """
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"n must be between 1 and {MAX_IMAGES}, got {n}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} px, got {size}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out_dir = Path(out_dir)
    check_output_folder(out_dir, overwrite)

    samples = []
    for index in track(range(n), desc="synth", unit="img", enabled=progress):
        image, mask = make_sample(seed, index, size)
        name = sample_id(index)
        sample = Sample(
            name, out_dir / IMAGE_FOLDER / f"{name}.jpg", out_dir / MASK_FOLDER / f"{name}_segmentation.png"
        )
        write_bytes_atomic(sample.image, encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))
        write_bytes_atomic(sample.mask, encode(".png", np.where(mask, 255, 0).astype(np.uint8)))
        samples.append(sample)

    ids = [sample.id for sample in samples]
    remove_stale_samples(out_dir, set(ids))
    train, val = split_ids(ids, seed, val_fraction)
    write_text_atomic(out_dir / "splits" / "train.txt", "".join(f"{i}\n" for i in train))
    write_text_atomic(out_dir / "splits" / "val.txt", "".join(f"{i}\n" for i in val))
    write_text_atomic(out_dir / "README.md", readme_text(n, size, seed, len(train), len(val)))
    return samples
