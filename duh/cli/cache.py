"""``duh cache ls|info|prune``: look into and trim the build cache."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from duh._cache import parse_size
from duh.cli._common import JsonFlag, console, handle_errors, print_json
from duh.errors import ConfigError

__all__ = ["app", "parse_age", "parse_size"]

app = typer.Typer(help="Look into and trim the build cache ($DUH_CACHE_DIR or ~/.cache/duh).")

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` as seconds; anything else is a ``ConfigError``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match is None:
        raise ConfigError(f"--older-than {text!r} is not an age like 30d, 12h, 2w or 90m")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _ago(stamp: float) -> str:
    return f"{(time.time() - stamp) / 3600:.1f} h ago"


def _cache() -> Any:
    from duh.compiler.cache import StageCache

    return StageCache.default()


@app.command("ls")
@handle_errors
def ls(as_json: JsonFlag = False) -> None:
    """List the build cache's entries, least recently used first."""
    entries = _cache().entries()
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    table = Table(title=f"{len(entries)} entries", title_justify="left")
    table.add_column("key", overflow="fold")  # full keys: a cut one could name two entries
    for col in ("kind", "name", "size", "files", "last used"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.key, e.kind, e.name, _human(e.size), str(len(e.files)), _ago(e.used))
    console.print(table)


@app.command("info")
@handle_errors
def info(as_json: JsonFlag = False) -> None:
    """Where the cache is, and what each part of it holds."""
    cache = _cache()
    root: Path = cache.root.parent
    entries = cache.entries()
    kinds: dict[str, dict[str, int]] = {}
    for e in entries:
        kind = kinds.setdefault(e.kind, {"entries": 0, "bytes": 0})
        kind["entries"] += 1
        kind["bytes"] += e.size
    parts = {
        p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.is_symlink()
    }
    total = sum(parts.values())
    if as_json:
        print_json({"root": str(root), "builds": kinds, "bytes": parts, "total_bytes": total})
        return
    console.print(f"cache: [bold]{root}[/] ({_human(total)})")
    for name, size in parts.items():
        console.print(f"  {name}/: {_human(size)}")
    for kind_name, figures in kinds.items():
        size_text = _human(figures["bytes"])
        console.print(f"  build stages, {kind_name}: {figures['entries']} ({size_text})")


@app.command("prune")
@handle_errors
def prune(
    older_than: str | None = typer.Option(
        None, "--older-than", help="remove entries unused for this long (30d, 12h, 2w)"
    ),
    max_size: str | None = typer.Option(
        None, "--max-size", help="then remove the least recently used until at most this (10G)"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Remove build cache entries by age and/or total size; entries a build is using stay."""
    if older_than is None and max_size is None:
        raise ConfigError("say what to prune: --older-than AGE and/or --max-size SIZE")
    age = None if older_than is None else parse_age(older_than)
    size = None if max_size is None else parse_size(max_size)
    result = _cache().prune(age, size)
    if as_json:
        print_json(
            {
                "removed": [e.to_json() for e in result.removed],
                "kept": result.kept,
                "freed_bytes": result.freed,
                "bytes_left": result.size_left,
            }
        )
        return
    console.print(
        f"removed {len(result.removed)} entries ({_human(result.freed)}); "
        f"{result.kept} left ({_human(result.size_left)})"
    )
