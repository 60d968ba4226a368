"""The torch-free runtime: preprocessing, backends, the Segmenter, sources and overlay.

    from edgeseg.runtime import Segmenter
    with Segmenter.from_path("model.onnx") as segmenter:   # or a TensorRT engine with its sidecar
        result = segmenter.segment(bgr_image)             # probability, mask, contour, measurements, timings_ms

Imports numpy, OpenCV and (when a backend opens) onnxruntime or TensorRT; never torch.
"""

from edgeseg.runtime.backends import BackendUnavailable, OnnxRuntimeBackend, TensorRTBackend, open_backend
from edgeseg.runtime.model_file import RuntimeModelError, read_card
from edgeseg.runtime.segmenter import Segmentation, Segmenter

__all__ = [
    "BackendUnavailable",
    "OnnxRuntimeBackend",
    "RuntimeModelError",
    "Segmentation",
    "Segmenter",
    "TensorRTBackend",
    "open_backend",
    "read_card",
]
