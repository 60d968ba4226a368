"""Export: ONNX, FP16 and INT8 forms and TensorRT engines, gated by accuracy parity."""
