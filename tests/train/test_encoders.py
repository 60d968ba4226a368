"""The ImageNet EfficientNet-Lite0/1/2 weights: every tensor lands in the right place, and the normalisation fits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
smp = pytest.importorskip("segmentation_models_pytorch")

from edgeseg.core.card import ModelCard
from edgeseg.train.encoders import (
    IMAGENET_PREPROCESSING,
    LITE0_ENCODER,
    LITE_PREPROCESSING,
    EncoderWeightsError,
    encoder_preprocessing,
    lite_timm_state_dict,
    load_encoder_weights,
)
from edgeseg.train.network import build_model


@pytest.fixture(scope="module")
def mapped() -> dict:
    return lite_timm_state_dict(LITE0_ENCODER)


@pytest.fixture(scope="module")
def full_timm(mapped):
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    network.load_state_dict(mapped, strict=True)  # head and classifier included: every name and shape fits
    return network.eval()


@pytest.mark.parametrize(
    ("encoder", "count"), [(LITE0_ENCODER, 296), ("tu-tf_efficientnet_lite1", 386), ("tu-tf_efficientnet_lite2", 386)]
)
def test_mapping_covers_timm_network_one_to_one(encoder, count):
    mapped = lite_timm_state_dict(encoder)
    expected = timm.create_model(encoder.removeprefix("tu-"), pretrained=False).state_dict()
    assert set(mapped) == set(expected)
    assert len(mapped) == count
    for name, tensor in mapped.items():
        assert tensor.shape == expected[name].shape, name


@pytest.mark.parametrize("encoder", ["tu-tf_efficientnet_lite1", "tu-tf_efficientnet_lite2"])
def test_larger_lite_weights_load_into_the_fpn_encoder(encoder):
    model = smp.create_model("FPN", encoder_name=encoder, encoder_weights=None, classes=1)
    load_encoder_weights(model, encoder, "imagenet")
    mapped = lite_timm_state_dict(encoder)
    encoder_state = model.encoder.state_dict()
    assert len(encoder_state) == 378  # all but the classifier's conv_head, bn2 and fc
    for name, tensor in encoder_state.items():
        assert torch.equal(tensor, mapped[name.removeprefix("model.")]), name
    assert encoder_preprocessing(encoder, "imagenet") == LITE_PREPROCESSING


def test_every_encoder_tensor_is_loaded(mapped, tiny_card):
    model = build_model(tiny_card)
    load_encoder_weights(model, LITE0_ENCODER, "imagenet")
    encoder_state = model.encoder.state_dict()
    assert len(encoder_state) == 288
    for name, tensor in encoder_state.items():
        assert torch.equal(tensor, mapped[name.removeprefix("model.")]), name


def test_encoder_features_equal_full_timm_network(full_timm, tiny_card):
    model = build_model(tiny_card)
    load_encoder_weights(model, LITE0_ENCODER, "imagenet")
    encoder = model.encoder.eval()
    captured = []
    hooks = [
        full_timm.blocks[index].register_forward_hook(lambda _m, _i, out: captured.append(out))
        for index in (0, 1, 2, 4, 6)
    ]  # the ends of the stride-2/4/8/16/32 stages
    torch.manual_seed(0)
    image = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        features = encoder(image)[1:]
        full_timm(image)
    for hook in hooks:
        hook.remove()
    assert len(features) == len(captured) == 5
    for ours, theirs in zip(features, captured, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def _grace_hopper_probability(network, preprocessing) -> tuple[int, float]:
    from matplotlib import cbook

    from edgeseg.core.files import read_image
    from edgeseg.core.preprocess import preprocess

    image = read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    height, width = image.shape[:2]
    side = min(height, width)
    image = image[(height - side) // 2 : (height - side) // 2 + side, (width - side) // 2 : (width - side) // 2 + side]
    batch = torch.from_numpy(preprocess(image, ModelCard(input_size=(224, 224), preprocessing=preprocessing)))
    with torch.no_grad():
        probabilities = torch.softmax(network(batch), dim=1)[0]
    return int(probabilities.argmax()), float(probabilities[652])


def test_recorded_normalisation_classifies_better_than_imagenet_statistics(full_timm):
    # The measurement behind LITE_PREPROCESSING (see edgeseg.train.encoders): class 652 is "military uniform".
    top, ours = _grace_hopper_probability(full_timm, LITE_PREPROCESSING)
    _, imagenet = _grace_hopper_probability(full_timm, IMAGENET_PREPROCESSING)
    assert top == 652
    assert ours > imagenet
    assert encoder_preprocessing(LITE0_ENCODER, "imagenet") == LITE_PREPROCESSING


def test_weights_from_a_safetensors_file(tmp_path, tiny_card):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_model(tiny_card)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.encoder.state_dict().items()}, str(path))
    target = build_model(tiny_card)
    load_encoder_weights(target, LITE0_ENCODER, str(path))
    for name, tensor in source.encoder.state_dict().items():
        assert torch.equal(tensor, target.encoder.state_dict()[name])

    save_file({"nothing": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(EncoderWeightsError, match="do not fit the encoder"):
        load_encoder_weights(target, LITE0_ENCODER, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(EncoderWeightsError, match="imagenet', 'none' or the path"):
        load_encoder_weights(target, LITE0_ENCODER, str(tmp_path / "missing.pt"))


def test_unreachable_hub_gives_the_fix(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as here: no hub, fail at once
    model = smp.create_model("FPN", encoder_name="resnet18", encoder_weights=None, classes=1)
    with pytest.raises(EncoderWeightsError, match="--encoder-weights none"):
        load_encoder_weights(model, "resnet18", "imagenet")
