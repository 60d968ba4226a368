"""The model card: the one source of truth for how a model's weights are used.

A trained model is a run directory holding weights plus ``card.json``. The card records everything
needed to feed the network and read its output correctly (input size, preprocessing, threshold), so
no second copy of those constants exists anywhere else: training, export, the runtime and the
benchmarks all read them from here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import write_text_atomic

SCHEMA_VERSION = 3
# Versions this edgeseg reads: 2 added provenance.data_licence and provenance.evaluations; a version 1
# card is the same without them. 3 names the training data (provenance.data) by its folder's name and
# adds provenance.data_files_hash; a version 1 or 2 card held the folder's path there, of whatever
# machine trained it, and is read with that path cut to its last part.
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
CARD_FILENAME = "card.json"


class CardError(EdgesegError, ValueError):
    """A model card that cannot be used: missing, malformed, or of an unknown schema version."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input tensor (see ``edgeseg.core.preprocess``)."""

    color_order: str = "RGB"  # channel order the network expects; images arrive from OpenCV as BGR
    scale: float = 1.0 / 255.0  # applied to uint8 pixel values before mean/std
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"  # the whole image is resized to the input size, aspect not kept
    interpolation: str = "area"  # OpenCV interpolation used for that resize


@dataclass(frozen=True)
class Output:
    """How the network's output becomes a mask."""

    activation: str = "sigmoid"  # applied by the runtime to the network's logits
    threshold: float = 0.5  # probability above which a pixel is lesion
    upsample: str = "linear"  # interpolation of the probability map back to the image's resolution
    # A dermoscopy image frames one lesion: keep only the largest region (inside its outer contour,
    # holes kept), so stray islands neither flicker in a live overlay nor inflate the measured area. Of
    # near-equal regions the most central is kept (edgeseg.core.postprocess.lesion_contour).
    keep_largest_region: bool = True


@dataclass(frozen=True)
class TensorNames:
    """Names of the exported graph's input and output tensors."""

    input: str = "image"
    output: str = "logits"


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from: data, training and the versions that made them.

    The data is named, never located: ``data`` is the data folder's name and ``data_files_hash`` the
    sha256 of the list of its image and mask files that training used (``split_hash``: of its split). A
    path would name a folder of the machine that trained, which means nothing on the next one.
    """

    data: str = ""
    data_files_hash: str = ""
    split_hash: str = ""
    train_images: int = 0
    val_images: int = 0
    epochs: int = 0
    best_epoch: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)
    # Other views of the data, each {"images": n, metric: mean}: e.g. "val_camera_framed" (the val images in
    # full camera frames), "full_resolution_val"; see benchmarks/train_accuracy.py.
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    data_licence: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if PATH_SEPARATORS.search(self.data):
            raise CardError(
                f"provenance.data {self.data!r} is a path; a card names its training data by the "
                f"folder's name alone ({data_name(self.data)!r})"
            )


@dataclass(frozen=True)
class ModelCard:
    architecture: str = "FPN"
    encoder: str = "tu-tf_efficientnet_lite0"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ("lesion",)
    input_size: tuple[int, int] = (256, 256)  # (height, width), each a multiple of 32
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    output: Output = field(default_factory=Output)
    tensor_names: TensorNames = field(default_factory=TensorNames)
    provenance: Provenance = field(default_factory=Provenance)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_input_size(self.input_size)
        if not 0.0 < self.output.threshold < 1.0:
            raise CardError(f"output threshold {self.output.threshold} must lie strictly between 0 and 1")

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "card") -> ModelCard:
        if not isinstance(data, dict):
            raise CardError(f"{source}: a model card is a JSON object, found {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise CardError(
                f"{source}: model card schema version {version!r} is not supported by this edgeseg "
                f"(it reads versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}). Re-export the model with "
                f"this edgeseg, or install the edgeseg version that wrote it."
            )
        try:
            return cls(
                architecture=data["architecture"],
                encoder=data["encoder"],
                architecture_kwargs=dict(data.get("architecture_kwargs", {})),
                classes=tuple(data["classes"]),
                input_size=_pair(data["input_size"]),
                preprocessing=_build(Preprocessing, data["preprocessing"], tuples=("mean", "std")),
                output=_build(Output, data["output"]),
                tensor_names=_build(TensorNames, data.get("tensor_names", {})),
                provenance=_build(Provenance, _named_data(data.get("provenance", {}), version)),
                schema_version=SCHEMA_VERSION,
            )
        except CardError as error:
            raise CardError(f"{source}: {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise CardError(f"{source}: malformed model card ({type(error).__name__}: {error})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CardError(f"{source}: not valid JSON ({error})") from None
        return cls.from_dict(data, source)


PATH_SEPARATORS = re.compile(r"[/\\]")


def data_name(folder: str | os.PathLike) -> str:
    """A data folder's name, the way a card records it: its last part ("isic2018" for ".../data/isic2018/")."""
    parts = [part for part in PATH_SEPARATORS.split(os.fspath(folder)) if part]
    return parts[-1] if parts else ""


def _named_data(provenance: dict[str, Any], version: int) -> dict[str, Any]:
    """A version 1 or 2 card's provenance with its data path cut to the folder's name, as version 3 keeps it."""
    if version >= 3 or not isinstance(provenance, dict) or not isinstance(provenance.get("data"), str):
        return provenance
    return {**provenance, "data": data_name(provenance["data"])}


def _pair(value: Any) -> tuple[int, int]:
    height, width = value
    return int(height), int(width)


def _round_up_32(value: int) -> int:
    return max(32, (int(value) + 31) // 32 * 32)


def check_input_size(size: tuple[int, int]) -> None:
    """The network input rule: FPN halves the input five times, so each side is a positive multiple of 32."""
    height, width = size
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise CardError(
            f"input size {height}x{width} is not usable: FPN needs height and width that are positive "
            f"multiples of 32. Consider {_round_up_32(height)}x{_round_up_32(width)}."
        )


def parse_input_size(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '256x320' -> (256, 320), height x width; CardError unless usable."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise CardError(f"{text!r}: give the input size as one number (256) or HEIGHTxWIDTH (256x320)")
    size = int(match[1]), int(match[2] or match[1])
    check_input_size(size)
    return size


def _build(kind: type, data: dict[str, Any], tuples: tuple[str, ...] = ()) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - known
    if unknown:
        raise CardError(f"unknown field(s) {sorted(unknown)} in {kind.__name__}")
    values = {key: tuple(value) if key in tuples else value for key, value in data.items()}
    return kind(**values)


def load_card(path: str | os.PathLike) -> ModelCard:
    """Load a card from ``card.json`` or from a run directory that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    if not path.is_file():
        raise CardError(
            f"{path}: no model card here. A run directory made by `edgeseg train` holds card.json; "
            f"pass that directory or the card file itself."
        )
    return ModelCard.from_json(path.read_text(encoding="utf-8"), source=str(path))


def save_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write the card atomically; a run directory gets ``card.json`` inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    write_text_atomic(path, card.to_json() + "\n")
    return path
