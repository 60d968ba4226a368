"""The Python front door at the command line's level: load's settings, the inputs segment() takes, a result's
overlay() and save(), reprs that say what a thing is, and the public names."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

import edgeseg
from edgeseg.core.files import read_image, read_mask, write_bytes_atomic
from edgeseg.core.segmenter import FILL_HOLES_DEFAULT, REFINE_DEFAULT, TTA_DEFAULT
from edgeseg.core.synthetic import make_sample


@pytest.fixture(scope="module")
def segmenter():
    """The default model with the default settings, on onnxruntime's CPU provider."""
    with edgeseg.load(backend="onnxruntime-cpu", threads=1) as opened:
        yield opened


@pytest.fixture(scope="module")
def lesion() -> np.ndarray:
    """A dermoscopy-like BGR image in which the default model finds a lesion."""
    return make_sample(3, 0, 256)[0]


def small_in_the_frame(image: np.ndarray) -> np.ndarray:
    """``image`` inside a larger frame of its own skin colour: a lesion small in the frame, as a camera sees one."""
    frame = np.empty((720, 960, 3), np.uint8)
    frame[:] = image[5, 5]
    frame[300:556, 500:756] = image
    return frame


def test_load_takes_the_segmenter_defaults(segmenter):
    assert (segmenter.tta, segmenter.refine, segmenter.fill_holes) == (TTA_DEFAULT, REFINE_DEFAULT, FILL_HOLES_DEFAULT)
    assert segmenter.mm_per_px is None and segmenter.card.output.keep_largest_region


def test_loads_settings_reach_the_segmenter_and_change_the_result(segmenter, lesion):
    with edgeseg.load(
        backend="onnxruntime-cpu",
        tta="hflip",
        refine=False,
        fill_holes=True,
        mm_per_px=0.05,
        keep_largest=False,
        threads=1,
    ) as changed:
        assert len(changed.prepare(lesion).batch) == 2  # the image and its flip: 2 network runs
        assert changed.infer(changed.prepare(small_in_the_frame(lesion))).crop is None  # no closer look
        assert changed.fill_holes and not changed.card.output.keep_largest_region
        assert changed.backend.session.get_session_options().intra_op_num_threads == 1
        result = changed.segment(lesion)
    plain = segmenter.segment(lesion)
    assert len(segmenter.prepare(lesion).batch) == 1
    assert segmenter.infer(segmenter.prepare(small_in_the_frame(lesion))).crop is not None  # refine is on by default
    assert not np.array_equal(result.probability, plain.probability)  # the flip's view was averaged in
    found = result.measurements
    assert found.lesion_present and found.max_diameter_mm == pytest.approx(found.max_diameter_px * 0.05)
    assert plain.measurements.max_diameter_mm is None


def test_a_setting_load_does_not_have_is_a_type_error_naming_load():
    with pytest.raises(TypeError, match=r"load\(\) got an unexpected keyword argument 'tta_mode'"):
        edgeseg.load(tta_mode="hflip")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"tta": "flip"}, "use one of none, hflip, hvflip"),
        ({"mm_per_px": -0.02}, "positive number of millimetres per pixel"),
        ({"backend": "gpu"}, "use one of auto, onnxruntime-cpu"),
    ],
)
def test_a_value_load_cannot_take_is_a_value_error_before_anything_opens(monkeypatch, settings, says):
    import edgeseg.runtime.backends

    def must_not_open(*args, **kwargs):
        raise AssertionError("a backend was opened for settings that were refused")

    monkeypatch.setattr(edgeseg.runtime.backends, "open_backend", must_not_open)
    with pytest.raises(ValueError, match=says):
        edgeseg.load(**settings)


def test_segment_takes_a_path_a_bgr_array_and_an_rgb_array(segmenter, lesion, tmp_path):
    ok, png = cv2.imencode(".png", lesion)
    path = write_bytes_atomic(tmp_path / "ISIC_0000001.png", png.tobytes())
    from_array = segmenter.segment(lesion)
    from_rgb = segmenter.segment(np.ascontiguousarray(lesion[..., ::-1]), rgb=True)
    mistaken = segmenter.segment(np.ascontiguousarray(lesion[..., ::-1]))  # RGB taken as BGR: the colours swapped
    for result in (segmenter.segment(path), segmenter.segment(str(path)), segmenter.segment_file(path)):
        assert result.name == "ISIC_0000001"
        np.testing.assert_array_equal(result.probability, from_array.probability)
    np.testing.assert_array_equal(from_rgb.probability, from_array.probability)
    np.testing.assert_array_equal(from_rgb.mask, from_array.mask)
    assert not np.allclose(mistaken.probability, from_array.probability, atol=1e-3)
    assert from_array.name is None and from_array.image is lesion  # the caller's array, not a copy


def test_segment_takes_a_pil_image_in_its_own_colour_order(segmenter, lesion):
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed; segment() needs no Pillow")
    expected = segmenter.segment(lesion)
    rgb = np.ascontiguousarray(lesion[..., ::-1])
    for mode in ("RGB", "RGBA"):
        result = segmenter.segment(image_module.fromarray(rgb).convert(mode))
        np.testing.assert_array_equal(result.probability, expected.probability, err_msg=mode)
    grey = cv2.cvtColor(lesion, cv2.COLOR_BGR2GRAY)
    from_pil = segmenter.segment(image_module.fromarray(grey))
    np.testing.assert_array_equal(from_pil.probability, segmenter.segment(grey).probability)


def test_segment_refuses_what_is_not_an_image_saying_what_it_takes(segmenter):
    with pytest.raises(TypeError, match=r"path .* numpy array .* \(rgb=True for RGB\), or a PIL image; got list"):
        segmenter.segment([[1, 2, 3]])


def test_overlay_draws_the_lesion_on_the_image(segmenter, lesion):
    result = segmenter.segment(lesion)
    overlay = result.overlay()
    assert overlay.shape == lesion.shape and overlay.dtype == np.uint8
    inside = cv2.erode(result.mask.view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # off the contour
    far = cv2.dilate(result.mask.view(np.uint8), np.ones((15, 15), np.uint8)) == 0
    inside[:60] = far[:60] = False  # the size line's panel is drawn top left
    assert inside.sum() > 1000 and (overlay[inside] != lesion[inside]).any(axis=-1).all()  # the lesion is tinted
    assert far.any() and np.array_equal(overlay[far], lesion[far])  # away from the lesion: the image as it was
    assert result.overlay() is not overlay  # each call draws its own


def test_results_of_the_stages_keep_their_image_too(segmenter, lesion):
    finished = segmenter.finish(segmenter.infer(segmenter.prepare(lesion)))
    assert finished.image is lesion and finished.overlay().shape == lesion.shape


def test_save_writes_the_overlay_and_the_mask_with_isic_names(segmenter, lesion, tmp_path):
    ok, png = cv2.imencode(".png", lesion)
    named = segmenter.segment(write_bytes_atomic(tmp_path / "ISIC_0000002.png", png.tobytes()))
    folder = tmp_path / "results" / "today"
    paths = named.save(folder)
    assert paths == [folder / "ISIC_0000002_overlay.jpg", folder / "ISIC_0000002_segmentation.png"]
    assert read_image(paths[0]).shape == lesion.shape
    np.testing.assert_array_equal(read_mask(paths[1]), named.mask)
    assert set(np.unique(cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED))) <= {0, 255}
    named.save(folder)  # again: the same two files, replaced
    unnamed = segmenter.segment(lesion).save(folder)
    assert [path.name for path in unnamed] == ["image_overlay.jpg", "image_segmentation.png"]
    assert sorted(path.name for path in folder.iterdir()) == sorted(path.name for path in paths + unnamed)


def test_reprs_say_what_a_thing_is(segmenter, lesion):
    shown = repr(segmenter)
    threshold = segmenter.card.output.threshold
    for part in (
        "model.onnx",
        "onnxruntime-cpu",
        "fp32",
        "input 256x256",
        f"threshold {threshold}",
        "tta 'none'",
        "refine True",
    ):
        assert part in shown, shown
    result = segmenter.segment(lesion)
    share = result.measurements.area_px / result.mask.size
    assert repr(result) == (
        f"<Segmentation 256x256: lesion in {share:.1%} of the image, "
        f"max diameter {result.measurements.max_diameter_px:.1f} px>"
    )
    assert repr(result.measurements).startswith("<Measurements lesion: 1 region, area ")
    empty = result.measurements.__class__(False, 0, 0, None, 0.0, 0.0)
    assert repr(empty) == "<Measurements: no lesion>"
    assert "array(" not in repr(result) and len(repr(result)) < 200


def test_the_public_names_resolve_and_import_edgeseg_stays_light():
    code = (
        "import sys, edgeseg\n"
        "heavy = sorted({'cv2', 'onnxruntime', 'torch'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
        "assert set(edgeseg.__all__) <= set(dir(edgeseg)), set(edgeseg.__all__) - set(dir(edgeseg))\n"
        "missing = [name for name in edgeseg.__all__ if getattr(edgeseg, name, None) is None]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {"load", "Segmenter", "Segmentation", "Measurements", "ModelCard", "EdgesegError", "__version__"} <= set(
        edgeseg.__all__
    )
    assert edgeseg.Segmentation.__module__ == "edgeseg.core.segmenter" and issubclass(
        edgeseg.BackendUnavailable, edgeseg.EdgesegError
    )
    with pytest.raises(AttributeError, match="no attribute 'segment'"):
        edgeseg.segment  # noqa: B018 - reading the attribute is what raises
