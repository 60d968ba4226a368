"""The torch-free runtime: preprocessing, backends, the Segmenter, sources and overlay."""
