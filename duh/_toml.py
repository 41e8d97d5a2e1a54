"""Reading the TOML files users give duh (recipes), with one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from duh.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: Path, what: str = "recipe") -> dict[str, Any]:
    """The parsed TOML at ``path``; a missing or malformed file is a ``ConfigError``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path.name} is not valid TOML: {exc}") from None
