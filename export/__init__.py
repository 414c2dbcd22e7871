"""PyTorch re-implementation of Human3R, checkpoint loading, ONNX export and TensorRT engine building."""
