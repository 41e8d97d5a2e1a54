"""Calibration data readers and calibrators."""

from __future__ import annotations

from duh.calibration._calibrators import METHODS, TensorRanges, calibrate, float_tensors
from duh.calibration._data import CalibrationSet
from duh.calibration._images import IMAGE_SUFFIXES, PreprocessSpec, load_image, preprocess_spec
from duh.calibration._readers import SYNTHETIC, load_calibration

__all__ = [
    "IMAGE_SUFFIXES",
    "METHODS",
    "SYNTHETIC",
    "CalibrationSet",
    "PreprocessSpec",
    "TensorRanges",
    "calibrate",
    "float_tensors",
    "load_calibration",
    "load_image",
    "preprocess_spec",
]
