"""Training and validation data: every image decoded once into memory, then augmented on the fly.

Images are resized once, with ``edgeseg.core.preprocess.resize_to_input`` (the runtime's own geometry), to
the card's input size and kept as uint8. Training samples are augmented from there and normalised
with the card's mean/std; validation tensors are made by ``edgeseg.core.preprocess.preprocess`` itself,
so validation sees exactly what the runtime will feed the network.

Augmentation uses torchvision.transforms.v2 rather than albumentations: albumentations pulls in
opencv-python-headless, which installs the same ``cv2`` module as our opencv-python and breaks it.
v2 transforms an image and its ``tv_tensors.Mask`` together, so the mask follows every geometric change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeseg.core.card import ModelCard, Preprocessing
from edgeseg.core.data import Sample
from edgeseg.core.files import read_image, read_mask
from edgeseg.core.framing import CAMERA_ASPECTS, Framing, place_in_frame, resize_pair, touches_border, vignette
from edgeseg.core.preprocess import preprocess, resize_to_input
from edgeseg.core.progress import progress as track


@dataclass
class TrainImages:
    """Training images and masks at the input size: uint8 RGB (N, 3, H, W) and uint8 0/1 (N, 1, H, W)."""

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    interpolation: str = Preprocessing().interpolation  # the card's, with which camera framing stretches a frame


@dataclass
class ValImages:
    """Validation inputs exactly as the runtime makes them, and the truth at each image's own resolution."""

    ids: list[str]
    inputs: torch.Tensor  # float32 (N, 3, H, W), edgeseg.core.preprocess.preprocess of each image
    truths: list[np.ndarray]  # bool (h, w) per image, as the ISIC scorer reads the mask


def resize_mask(mask: np.ndarray, card: ModelCard) -> np.ndarray:
    """A boolean mask at the card's input size (area-averaged, then > 0.5, so thin parts are not lost to aliasing)."""
    return resize_to_input(mask.astype(np.float32), card) >= 0.5


def decode_train(samples: list[Sample], card: ModelCard, progress: bool = True) -> TrainImages:
    height, width = card.input_size
    images = torch.empty((len(samples), 3, height, width), dtype=torch.uint8)
    masks = torch.empty((len(samples), 1, height, width), dtype=torch.uint8)
    for index, sample in enumerate(track(samples, desc="decode train", unit="img", enabled=progress)):
        resized = resize_to_input(read_image(sample.image), card)
        images[index] = torch.from_numpy(np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1)))  # BGR -> RGB
        masks[index, 0] = torch.from_numpy(resize_mask(read_mask(sample.mask), card))
    if card.preprocessing.color_order != "RGB":
        images = images.flip(1)
    return TrainImages([sample.id for sample in samples], images, masks, card.preprocessing.interpolation)


def decode_val(samples: list[Sample], card: ModelCard, progress: bool = True) -> ValImages:
    inputs = torch.empty((len(samples), 3, *card.input_size), dtype=torch.float32)
    truths = []
    for index, sample in enumerate(track(samples, desc="decode val", unit="img", enabled=progress)):
        inputs[index] = torch.from_numpy(preprocess(read_image(sample.image), card)[0])
        truths.append(read_mask(sample.mask))
    return ValImages([sample.id for sample in samples], inputs, truths)


def normalize_batch(images: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """uint8 (N, 3, H, W) in the card's colour order -> float32 network input, as edgeseg.core.preprocess.normalize."""
    prep = card.preprocessing
    std = torch.tensor(prep.std, dtype=torch.float32, device=images.device)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=images.device)
    gain = (prep.scale / std).view(1, 3, 1, 1)
    offset = (mean / std).view(1, 3, 1, 1)
    return images.float() * gain - offset


def build_augmentation(
    square: bool, strength: float = 1.0, camera_framing: float = 0.0, interpolation: str = Preprocessing().interpolation
) -> torch.nn.Module:
    """Augmentation that suits dermoscopy: any orientation, some zoom and shift, colour and lighting changes.

    ``camera_framing`` is the share of samples placed inside a full camera frame first (CameraFraming):
    smaller, off-centre lesions in a 4:3 or 3:2 frame stretched to the input, some with a dermoscope's
    dark corners or out of focus, as the device's camera shows them.
    """
    from torchvision.transforms import v2

    framing = [CameraFraming(camera_framing, interpolation)] if camera_framing > 0 else []
    geometric = [*framing, v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if square:
        # A dermoscope has no "up": any of the four right-angle rotations (exact, no interpolation).
        geometric.append(v2.RandomChoice([RightAngleRotation(k) for k in range(4)]))
    return v2.Compose(
        [
            *geometric,
            v2.RandomApply(
                [
                    v2.RandomAffine(
                        degrees=20 * strength,
                        translate=(0.08 * strength,) * 2,
                        scale=(1 - 0.2 * strength, 1 + 0.2 * strength),
                    )
                ],
                p=0.7,
            ),
            v2.ColorJitter(
                brightness=0.2 * strength, contrast=0.2 * strength, saturation=0.2 * strength, hue=0.04 * strength
            ),
            *([v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.15)] if framing else []),
        ]
    )


class CameraFraming(torch.nn.Module):
    """With probability ``p``, put the crop inside a camera frame (edgeseg.core.framing) and stretch it back.

    The frame is 1 to 2.5 times the crop's height, of aspect 1:1, 4:3 or 3:2, with the crop anywhere
    in it; a third of the framed samples also get a dermoscope's darkened corners. Crops whose lesion
    reaches their edge stay as they are (the lesion would end at a straight line). Parameters come
    from torch's generator, so a resumed run draws the same ones.
    """

    def __init__(self, p: float, interpolation: str = Preprocessing().interpolation, max_zoom: float = 2.5) -> None:
        super().__init__()
        self.p, self.interpolation, self.max_zoom = p, interpolation, max_zoom

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        draws = torch.rand(6).tolist()  # always six, so the random stream does not depend on the image
        if draws[5] >= self.p or touches_border(mask[0].numpy()):
            return image, mask
        framing = Framing(
            zoom=1.0 + (self.max_zoom - 1.0) * draws[0],
            aspect=CAMERA_ASPECTS[int(draws[1] * len(CAMERA_ASPECTS)) % len(CAMERA_ASPECTS)],
            x=draws[2],
            y=draws[3],
        )
        height, width = image.shape[-2:]
        pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        framed_image, framed_mask = place_in_frame(pixels, mask[0].numpy(), framing)
        framed_image, framed_mask = resize_pair(framed_image, framed_mask, height, width, self.interpolation)
        if draws[4] < 1 / 3:
            framed_image = vignette(framed_image, strength=0.5 + draws[4] * 1.5)
        return (
            tv_tensors.wrap(torch.from_numpy(np.ascontiguousarray(framed_image.transpose(2, 0, 1))), like=image),
            tv_tensors.wrap(torch.from_numpy(framed_mask[None].astype(np.uint8)), like=mask),
        )


class RightAngleRotation(torch.nn.Module):
    """Rotate image and mask together by k * 90 degrees."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        return (
            tv_tensors.wrap(torch.rot90(image, self.k, dims=(-2, -1)), like=image),
            tv_tensors.wrap(torch.rot90(mask, self.k, dims=(-2, -1)), like=mask),
        )


class AugmentedImages(Dataset):
    """Yields (uint8 image (3, H, W), float mask (1, H, W), index); normalisation happens per batch."""

    def __init__(
        self, data: TrainImages, augment: bool = True, strength: float = 1.0, camera_framing: float = 0.0
    ) -> None:
        height, width = data.images.shape[-2:]
        self.data = data
        self.transform = (
            build_augmentation(
                square=height == width,
                strength=strength,
                camera_framing=camera_framing,
                interpolation=data.interpolation,
            )
            if augment
            else None
        )

    def __len__(self) -> int:
        return len(self.data.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        from torchvision import tv_tensors

        image, mask = self.data.images[index], self.data.masks[index]
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).float(), index
