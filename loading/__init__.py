"""Opening any form of a model (``edgeseg.loading.open.open_model``): a run directory on PyTorch (through
``edgeseg.train``), an ONNX or a TensorRT engine on the runtime, each as a Segmenter with its card.

Loading stands apart from running: export (to check its forms) and evaluate (eval, bench) both stand on
it; it stands on train and the runtime. PyTorch is imported only when a run directory is opened.
"""
