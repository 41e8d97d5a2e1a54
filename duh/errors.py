"""The errors duh raises for problems a user can fix.

Every message says what failed, what was seen against what was expected, and what to do.
Internal bugs are not ``DuhError``: they surface as ordinary exceptions.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "CalibrationError",
    "ConfigError",
    "DuhError",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "PassError",
    "TargetError",
]


class DuhError(Exception):
    """Root of every error a user can act on; the CLI prints it as one line."""

    exit_code: int = 1


class ConfigError(DuhError):
    """Bad options, recipe or target name."""

    exit_code = 2


class ModelError(DuhError):
    """The source model cannot be read, checked or converted."""

    exit_code = 3


class PassError(DuhError):
    """A pass failed on this model."""

    exit_code = 4


class TargetError(DuhError):
    """A target cannot build, or its engine cannot run, on this host."""

    exit_code = 5


class CalibrationError(DuhError):
    """Calibration data is missing, unreadable or does not fit the model."""

    exit_code = 6


class ArtifactError(DuhError):
    """An artifact is missing, tampered with, or made for another host."""

    exit_code = 7


class InputError(DuhError):
    """A feed given to a session has a wrong name, dtype or shape."""

    exit_code = 8


class MissingDependencyError(DuhError):
    """An optional engine or library is not installed; the message names the pip extra."""

    exit_code = 9

    def __init__(self, package: str, extra: str, what: str = "") -> None:
        self.package = package
        self.extra = extra
        purpose = f" (needed for {what})" if what else ""
        super().__init__(
            f"python package '{package}' is not installed{purpose}; "
            f"install it with: pip install 'duh[{extra}]'"
        )
