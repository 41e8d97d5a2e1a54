"""Calibration data as the compiler sees it: feeds to calibrate on and feeds held out to check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CalibrationSet"]


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    """Samples (one feed each, batch of one) split into calibration and held-out check feeds."""

    feeds: tuple[dict[str, np.ndarray], ...]
    check: tuple[dict[str, np.ndarray], ...]
    source: str
    digest: str
    synthetic: bool = False
