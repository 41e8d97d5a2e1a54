"""What the GPU engines share, so that neither engine package imports the other.

The ``tensorrt`` engine and ONNX Runtime's TensorRT execution provider both build TensorRT
engines from the pipeline's ONNX: they run the same default pipeline, follow TensorRT's rules for
Q/DQ models, take the same optimization profiles (``--shape NAME=MIN:OPT:MAX``) and read the same
build options. Nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

from duh.targets._gpu._pipeline import (
    float_passes,
    gpu_default_passes,
    int8_quantize_config,
    prepare_int8,
)
from duh.targets._gpu._placement import misplaced_qdq, place_for_tensorrt
from duh.targets._gpu._profiles import (
    PROFILE_PREFIX,
    InputProfile,
    ShapeRange,
    dynamic_inputs,
    input_profiles,
    parse_shape_range,
    profile_ranges,
    trt_ep_profile_options,
)
from duh.targets._gpu._qdq import QdqViolation, check_qdq, fold_bias_dequantize, qdq_counts
from duh.targets._gpu._settings import TrtSettings, settings_from_options

__all__ = [
    "PROFILE_PREFIX",
    "InputProfile",
    "QdqViolation",
    "ShapeRange",
    "TrtSettings",
    "check_qdq",
    "dynamic_inputs",
    "float_passes",
    "fold_bias_dequantize",
    "gpu_default_passes",
    "input_profiles",
    "int8_quantize_config",
    "misplaced_qdq",
    "parse_shape_range",
    "place_for_tensorrt",
    "prepare_int8",
    "profile_ranges",
    "qdq_counts",
    "settings_from_options",
    "trt_ep_profile_options",
]
