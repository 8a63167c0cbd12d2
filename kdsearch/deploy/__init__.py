"""What a student costs to serve and how it ships: cost measurements and ONNX export."""
