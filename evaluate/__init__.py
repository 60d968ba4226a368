"""The evaluation layer: how good and how fast a model is, in any of its forms.

- ``models``: ``open_model(path, backend)``, the one door to a model form (a run directory on
  PyTorch, an ONNX or a TensorRT engine on the runtime), and finding the forms in folders.
- ``accuracy`` (`edgeseg eval`): the ISIC metrics per image at each image's own resolution.
- ``bench`` / ``bench_report`` (`edgeseg bench`): latency per stage, forms interleaved, and accuracy.

It stands above ``edgeseg.train`` and ``edgeseg.runtime`` and below the command line; export uses it
to check its forms. PyTorch is imported only when a run directory is opened.
"""
