"""Export: int8 quantization, Edge TPU compatibility checks and compilation, the device bundle."""
