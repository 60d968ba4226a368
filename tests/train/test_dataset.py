"""Training data: validation tensors are the runtime's own, and augmentation keeps masks on their images."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.core.data import discover_samples
from edgeseg.core.files import read_image, read_mask
from edgeseg.core.preprocess import preprocess, resize_to_input
from edgeseg.train.dataset import AugmentedImages, TrainImages, decode_train, decode_val, normalize_batch


def test_validation_tensor_is_the_runtime_preprocessing(synthetic_dir, tiny_card):
    samples = discover_samples(synthetic_dir, split="val")
    val = decode_val(samples, tiny_card, progress=False)
    for index, sample in enumerate(samples):
        assert np.array_equal(val.inputs[index].numpy(), preprocess(read_image(sample.image), tiny_card)[0])
        assert np.array_equal(val.truths[index], read_mask(sample.mask))  # truth kept at its own resolution
    assert val.truths[0].shape == (96, 96)


def test_unaugmented_training_tensor_matches_the_runtime(synthetic_dir, tiny_card):
    samples = discover_samples(synthetic_dir, split="train")[:4]
    data = decode_train(samples, tiny_card, progress=False)
    images = torch.stack([AugmentedImages(data, augment=False)[i][0] for i in range(4)])
    expected = np.concatenate([preprocess(read_image(s.image), tiny_card) for s in samples])
    np.testing.assert_allclose(normalize_batch(images, tiny_card).numpy(), expected, rtol=0, atol=1e-6)
    mask = resize_to_input(read_mask(samples[0].mask).astype(np.float32), tiny_card) >= 0.5
    assert np.array_equal(data.masks[0, 0].numpy().astype(bool), mask)


def test_augmentation_keeps_masks_aligned():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 1, 64, 64)) > 0.6).to(torch.uint8)
    images = (masks * 200).repeat(1, 3, 1, 1)  # the image shows its own mask, grey on black
    dataset = AugmentedImages(TrainImages([str(i) for i in range(6)], images, masks))
    changed = 0
    torch.manual_seed(0)
    for _ in range(5):
        for index in range(6):
            image, mask, returned = dataset[index]
            assert returned == index and image.dtype == torch.uint8 and mask.shape == (1, 64, 64)
            assert torch.equal(image[0] > 100, mask[0] > 0.5)  # geometry identical; colour jitter keeps 200 vs 0 apart
            changed += not torch.equal(mask.to(torch.uint8), masks[index])
    assert changed > 20  # it did augment


def test_camera_framing_keeps_the_lesion_on_its_mask_and_shrinks_it():
    from edgeseg.train.dataset import CameraFraming

    image = torch.full((3, 64, 64), 200, dtype=torch.uint8)
    mask = torch.zeros((1, 64, 64), dtype=torch.uint8)
    mask[0, 20:44, 16:40] = 1
    image[:, mask[0] > 0] = 30  # a dark lesion inside the crop, not touching its edge
    rows, columns = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    unshaded = (rows**2 + columns**2).sqrt() < 0.8  # a vignette darkens only beyond this radius
    torch.manual_seed(0)
    framing = CameraFraming(p=1.0)
    shrunk = 0
    for _ in range(10):
        framed_image, framed_mask = framing(image, mask)
        dark = framed_image.float().mean(0) < 115
        agreement = (dark == (framed_mask[0] > 0))[unshaded].float().mean().item()
        assert framed_image.shape == image.shape and framed_mask.shape == mask.shape and agreement > 0.98
        shrunk += int(framed_mask.sum() < mask.sum())
    assert shrunk >= 7  # zoomed out: the lesion covers less of the input
    edge_mask = mask.clone()
    edge_mask[0, :, :3] = 1
    assert torch.equal(framing(image, edge_mask)[1], edge_mask)  # a lesion cut by the crop edge is left alone
