"""An ONNX model's metadata_props, set one key at a time: the card, how the weights are stored, INT8's choices.

Its own module so that every form's builder (onnx_export, half_weights, int8_export) can stand on it without
standing on each other.
"""

from __future__ import annotations


def set_metadata(proto, key: str, value: str | None) -> None:
    """Set ``key`` in the model's metadata_props to ``value``, replacing any entry of it; None removes it."""
    kept = [entry for entry in proto.metadata_props if entry.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if value is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
