"""Passes by name: the registry ``register_pass`` fills, with the built-ins loaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from duh.errors import ConfigError
from duh.passes._base import _PASSES, Pass

__all__ = ["config_help", "create_pass", "pass_names"]


def _registry() -> dict[str, type[Any]]:
    # Loaded on first use, so that importing duh.passes stays cheap.
    from duh.passes import _builtins  # noqa: F401  (importing it registers the built-ins)

    return _PASSES


def pass_names() -> list[str]:
    """Names of every registered pass, sorted."""
    return sorted(_registry())


def create_pass(name: str, config: Mapping[str, Any] | None = None) -> Pass:
    """Instantiate pass ``name`` with ``config`` (field name → value), validating both."""
    passes = _registry()
    if name not in passes:
        raise ConfigError(f"unknown pass {name!r}; the passes are: {', '.join(sorted(passes))}")
    cls = passes[name]
    config = dict(config or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ConfigError(
            f"pass {name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(fields) or '(none)'}"
        )
    # Recipes (TOML) give lists; configs are frozen, so list options become tuples.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        instance: Pass = cls(**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pass {name!r}: {exc}") from None
    return instance


def config_help(name: str) -> list[tuple[str, str, str]]:
    """(field, default, help) for each option of pass ``name``."""
    cls = _registry()[name]
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, repr(default), str(f.metadata.get("help", ""))))
    return rows
