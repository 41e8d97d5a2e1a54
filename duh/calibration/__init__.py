"""Calibration data readers and calibrators."""

from __future__ import annotations

from duh.calibration._data import CalibrationSet

__all__ = ["CalibrationSet"]
