"""edgeseg: an edge-deployment toolchain for dermoscopic skin-lesion segmentation.

The core (this package's own modules: the model card, pre- and postprocessing, the Segmenter and
its Backend protocol, metrics, data) needs only the standard library, numpy, OpenCV and click, and
imports nothing above it. The parts stand on it: ``edgeseg.train`` (torch) and ``edgeseg.runtime``
(onnxruntime or TensorRT, never torch); ``edgeseg.evaluate`` (eval, bench, ``open_model``) on both;
``edgeseg.export`` on all three; the command line (``edgeseg.cli``) and ``edgeseg.demo`` on top.
The layers are checked by import-linter (``.importlinter``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeseg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
