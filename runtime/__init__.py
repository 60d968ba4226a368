"""The torch-free runtime: model files, backends (onnxruntime, TensorRT), sources, overlay, `edgeseg run`.

    from edgeseg.runtime import open_segmenter
    with open_segmenter("model.onnx") as segmenter:       # or a TensorRT engine with its sidecar
        result = segmenter.segment(bgr_image)             # probability, mask, contour, measurements, timings_ms

The Segmenter itself and the Backend protocol live in the core (``edgeseg.core.segmenter``), so PyTorch can
stand beside these backends in evaluation. Imports numpy, OpenCV and (when a backend opens)
onnxruntime or TensorRT; never torch.
"""

from edgeseg.core.segmenter import BackendUnavailable, Segmentation, Segmenter
from edgeseg.runtime.backends import OnnxRuntimeBackend, TensorRTBackend, open_backend, open_segmenter
from edgeseg.runtime.loaders import RuntimeModelError, read_card

__all__ = [
    "BackendUnavailable",
    "OnnxRuntimeBackend",
    "RuntimeModelError",
    "Segmentation",
    "Segmenter",
    "TensorRTBackend",
    "open_backend",
    "open_segmenter",
    "read_card",
]
