"""What the GPU engines share: TensorRT's Q/DQ rules and optimization profiles, used by the
``tensorrt`` engine and by ONNX Runtime's TensorRT execution provider alike."""
