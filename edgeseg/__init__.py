"""edgeseg: an edge-deployment toolchain for dermoscopic skin-lesion segmentation.

The core (this package's own modules: the model card, pre- and postprocessing, the Segmenter and
its Backend protocol, metrics, data) needs only the standard library, numpy, OpenCV and click, and
imports nothing above it. The parts stand on it: ``edgeseg.train`` (torch) and ``edgeseg.runtime``
(onnxruntime or TensorRT, never torch); ``edgeseg.evaluate`` (eval, bench, ``open_model``) on both;
``edgeseg.export`` on all three; the command line (``edgeseg.cli``) and ``edgeseg.demo`` on top.
The layers are checked by import-linter (``.importlinter``).

This module is also the Python front door, for notebooks and scripts::

    import edgeseg
    segmenter = edgeseg.load()                  # the default model; or a model.onnx, an engine, a run directory
    result = segmenter.segment_file("lesion.jpg")   # or segmenter.segment(bgr_array)
    result.mask, result.probability, result.measurements.area_px

``load`` opens any model form through ``edgeseg.evaluate.models.open_model`` (imported when called, so
``import edgeseg`` stays light and never imports torch). The parts never import this facade (they take
the version from ``edgeseg.version``), so it may reach every layer without bending the layering.
"""

from edgeseg.version import __version__

__all__ = ["Segmentation", "Segmenter", "load", "__version__"]


def _limit_opencv_decoders() -> None:
    """Give OpenCV's decoders edgeseg's pixel limit, before anything imports cv2.

    OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 is imported, and then every decoder (any
    format, any entry point) refuses a larger image before allocating it; set later it is ignored. Every
    entry point (the edgeseg command, ``python -m edgeseg``, ``import edgeseg.runtime``) imports this
    package first, so it is set here. When a program imported cv2 before edgeseg, OpenCV keeps its own
    limit (2**30 pixels), and the header check of ``edgeseg.files.read_image`` still refuses a bomb.
    The rule is ``edgeseg.pixel_limit``'s, as for ``edgeseg.files.max_pixels``; a value it refuses leaves the
    default here, and ``max_pixels`` names the mistake at the first image.
    """
    import os

    from edgeseg.pixel_limit import DEFAULT_MAX_PIXELS, configured_max_pixels

    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(configured_max_pixels() or DEFAULT_MAX_PIXELS)


_limit_opencv_decoders()


def load(model=None, backend: str = "auto", **options):
    """A Segmenter for ``model`` (default: the model that ships with edgeseg) on ``backend``.

    ``model`` is an edgeseg ONNX, a TensorRT engine with its sidecar, or a training run directory
    (needs PyTorch); ``backend`` one of ``edgeseg.names.BACKENDS``; ``options`` go to
    ``edgeseg.evaluate.models.open_model`` (size, keep_largest, mm_per_px, threads).

    >>> import numpy as np, edgeseg
    >>> with edgeseg.load(backend="onnxruntime-cpu") as segmenter:
    ...     result = segmenter.segment(np.full((480, 640, 3), 180, np.uint8))
    >>> result.mask.shape
    (480, 640)
    """
    from edgeseg.evaluate.models import open_model
    from edgeseg.names import default_model_path

    return open_model(default_model_path() if model is None else model, backend, **options)


def __getattr__(name: str):
    # The Segmenter pulls in OpenCV; import it only when asked for, so `edgeseg --version` stays fast.
    if name in ("Segmenter", "Segmentation"):
        import edgeseg.segmenter

        return getattr(edgeseg.segmenter, name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
