"""What every command shares: the consoles, error rendering, logging and option parsers."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from duh.errors import ConfigError, DuhError

__all__ = [
    "console",
    "err_console",
    "handle_errors",
    "parse_shapes",
    "print_json",
    "setup_logging",
    "show_progress",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_state = {"verbose": 0}

P = ParamSpec("P")
R = TypeVar("R")


def setup_logging(verbose: int, quiet: bool) -> None:
    """Install a rich log handler: warnings by default, info with -v, debug with -vv."""
    _state["verbose"] = verbose
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    root = logging.getLogger("duh")
    root.handlers.clear()
    root.addHandler(RichHandler(console=err_console, show_path=False, show_time=verbose > 0))
    root.setLevel(level)
    root.propagate = False


def show_progress() -> bool:
    """Whether to draw progress bars: on a terminal, and never in CI logs."""
    return err_console.is_terminal and not os.environ.get("CI")


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a ``DuhError`` into one red line on stderr and its exit code (traceback with -v)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DuhError as exc:
            if _state["verbose"]:
                err_console.print_exception()
            err_console.print(
                f"[bold red]error:[/] {exc}", soft_wrap=True, markup=True, emoji=False
            )
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; nothing was written")
            raise typer.Exit(130) from None

    return wrapper


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (for --json), untouched by rich's markup."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def parse_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse repeated ``--shape name=1x3x224x224`` options."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, sep, dims = value.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name.strip()] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ConfigError(
                f"--shape {value!r} is not NAME=DxDxD (e.g. input=1x3x224x224)"
            ) from None
    return shapes
