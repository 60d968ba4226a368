"""edgeseg: an edge-deployment toolchain for dermoscopic skin-lesion segmentation.

The core (this package's own modules: the model card, pre- and postprocessing, the Segmenter and
its Backend protocol, metrics, data) needs only the standard library, numpy, OpenCV and click, and
imports nothing above it. The parts stand on it: ``edgeseg.train`` (torch) and ``edgeseg.runtime``
(onnxruntime or TensorRT, never torch); ``edgeseg.evaluate`` (eval, bench, ``open_model``) on both;
``edgeseg.export`` on all three; the command line (``edgeseg.cli``) and ``edgeseg.demo`` on top.
The layers are checked by import-linter (``.importlinter``).

This module is also the Python front door, for notebooks and scripts::

    import edgeseg
    segmenter = edgeseg.load()            # the default model; or a model.onnx, an engine, a run directory
    result = segmenter.segment("lesion.jpg")    # or a numpy array (BGR; rgb=True for RGB), or a PIL image
    result.mask, result.probability, result.measurements.max_diameter_px
    result.save("results/")               # results/lesion_overlay.jpg and results/lesion_segmentation.png

``load`` opens any model form through ``edgeseg.loading.open.open_model`` (imported when called, so
``import edgeseg`` stays light: no OpenCV, no onnxruntime, never torch). The names in ``__all__`` are
imported when first used. The parts never import this facade (they take the version from
``edgeseg.core.version``), so it may reach every layer without bending the layering.
"""

from edgeseg.core.version import __version__

__all__ = [
    "load",
    "Segmenter",
    "Segmentation",
    "Measurements",
    "ModelCard",
    "EdgesegError",
    "BackendUnavailable",
    "ImageReadError",
    "TTA_MODES",
    "__version__",
]

# Each public name and the module that defines it, imported when the name is first used.
_LAZY = {
    "Segmenter": "edgeseg.core.segmenter",
    "Segmentation": "edgeseg.core.segmenter",
    "BackendUnavailable": "edgeseg.core.segmenter",
    "TTA_MODES": "edgeseg.core.segmenter",
    "Measurements": "edgeseg.core.lesion_measurements",
    "ModelCard": "edgeseg.core.card",
    "EdgesegError": "edgeseg.core.errors",
    "ImageReadError": "edgeseg.core.files",
}


def _limit_opencv_decoders() -> None:
    """Give OpenCV's decoders edgeseg's pixel limit, before anything imports cv2.

    OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 is imported, and then every decoder (any
    format, any entry point) refuses a larger image before allocating it; set later it is ignored. Every
    entry point (the edgeseg command, ``python -m edgeseg``, ``import edgeseg.runtime``) imports this
    package first, so it is set here. When a program imported cv2 before edgeseg, OpenCV keeps its own
    limit (2**30 pixels), and the header check of ``edgeseg.core.files.read_image`` still refuses a bomb.
    The rule is ``edgeseg.core.pixel_limit``'s, as for ``edgeseg.core.files.max_pixels``; a value it refuses leaves the
    default here, and ``max_pixels`` names the mistake at the first image.
    """
    import os

    from edgeseg.core.pixel_limit import DEFAULT_MAX_PIXELS, configured_max_pixels

    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(configured_max_pixels() or DEFAULT_MAX_PIXELS)


_limit_opencv_decoders()


def load(
    model=None,
    backend: str = "auto",
    *,
    tta: str | None = None,
    refine: bool | None = None,
    fill_holes: bool | None = None,
    mm_per_px: float | None = None,
    keep_largest: bool | None = None,
    threads: int | None = None,
    size: tuple[int, int] | None = None,
):
    """A ready Segmenter for ``model`` on ``backend``; use it in a ``with`` block, or call its ``close()``.

    - ``model``: an edgeseg ONNX, a TensorRT engine with its sidecar, or a training run directory
      (needs PyTorch); None: the model that ships with edgeseg.
    - ``backend``: one of ``edgeseg.core.names.BACKENDS``; "auto" picks the fastest this host can run.
    - ``tta``: flip test-time augmentation, one of ``TTA_MODES`` ("hflip": 2 network runs an image,
      "hvflip": 4).
    - ``refine``: the closer look at a lesion that is small in the frame (a second network run there).
    - ``fill_holes``: fill the holes inside the kept lesion region.
    - ``mm_per_px``: the image's scale (from the dermatoscope's calibration); adds millimetre values to
      the measurements.
    - ``keep_largest``: keep only the largest lesion region (None: as the model card says; it keeps it).
    - ``threads``: onnxruntime's threads (None: one per usable core, edgeseg.runtime.thread_plan).
    - ``size``: (height, width) of the network input, for a run directory or a dynamic-shape ONNX.

    ``tta``, ``refine`` and ``fill_holes`` left at None take the Segmenter's defaults,
    ``edgeseg.core.segmenter.TTA_DEFAULT``, ``REFINE_DEFAULT`` and ``FILL_HOLES_DEFAULT``:

    >>> from edgeseg.core.segmenter import FILL_HOLES_DEFAULT, REFINE_DEFAULT, TTA_DEFAULT
    >>> TTA_DEFAULT, REFINE_DEFAULT, FILL_HOLES_DEFAULT
    ('none', True, False)

    A setting that does not exist is a TypeError, a value it cannot take a ValueError that lists the
    choices; a backend that cannot run here raises ``BackendUnavailable`` with what to install.

    >>> import numpy as np, edgeseg
    >>> with edgeseg.load(backend="onnxruntime-cpu", tta="hflip", mm_per_px=0.02) as segmenter:
    ...     result = segmenter.segment(np.full((480, 640, 3), 180, np.uint8))
    >>> result.mask.shape, result.overlay().shape
    ((480, 640), (480, 640, 3))
    >>> segmenter
    <Segmenter model.onnx on onnxruntime-cpu (fp32): input 256x256, threshold 0.4, tta 'hflip', refine True, 0.02 mm/px>
    """
    from edgeseg.core.names import default_model_path
    from edgeseg.core.segmenter import FILL_HOLES_DEFAULT, REFINE_DEFAULT, TTA_DEFAULT
    from edgeseg.loading.open import open_model

    return open_model(
        default_model_path() if model is None else model,
        backend,
        size=size,
        keep_largest=keep_largest,
        mm_per_px=mm_per_px,
        threads=threads,
        tta=TTA_DEFAULT if tta is None else tta,
        refine=REFINE_DEFAULT if refine is None else refine,
        fill_holes=FILL_HOLES_DEFAULT if fill_holes is None else fill_holes,
    )


def __getattr__(name: str):
    # OpenCV (the Segmenter, the card) is imported only when asked for: `import edgeseg` stays fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
