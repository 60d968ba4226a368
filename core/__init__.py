"""The core every part stands on: the model card, data, metrics, pre- and post-processing, the Segmenter and
the Backend protocol, the names of forms, files and backends, files, errors and the host.

It imports the standard library, numpy, OpenCV and click, never PyTorch (a Jetson image has none) and never
a part above it (.importlinter).
"""
