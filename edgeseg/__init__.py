"""edgeseg: an edge-deployment toolchain for dermoscopic skin-lesion segmentation.

The core (this package's own modules) needs only the standard library, numpy and OpenCV. The parts
stand on it: ``edgeseg.train`` (torch), ``edgeseg.runtime`` (onnxruntime or TensorRT, never torch)
and ``edgeseg.export`` (both).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeseg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
