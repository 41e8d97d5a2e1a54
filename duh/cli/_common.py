"""What every command shares: the consoles, error rendering, logging, options and their parsers.

Options that several commands take are declared here once, as ``Annotated`` aliases (the way
fastapi-cli declares its options), so that their flags and help read the same everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.status import Status

from duh.errors import ConfigError, DuhError

__all__ = [
    "Dynamic",
    "EngineOptions",
    "JsonFlag",
    "Quiet",
    "Shapes",
    "Threads",
    "TrustCode",
    "Verbose",
    "console",
    "err_console",
    "handle_errors",
    "parse_dynamic",
    "parse_key_values",
    "parse_shapes",
    "print_json",
    "progress",
    "setup_logging",
    "shape_profile_options",
    "show_progress",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_state = {"verbose": 0}

P = ParamSpec("P")
R = TypeVar("R")

# -- options several commands take -----------------------------------------------------------

Verbose = Annotated[
    int,
    typer.Option(
        "--verbose", "-v", count=True, help="more logging; -vv for debug, tracebacks on errors"
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="only errors")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
EngineOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option", "--engine-option", help="engine option KEY=VALUE (repeatable)"
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        "-j",
        help="engine intra-op threads (serve: per instance, default cores / instances; "
        "otherwise the engine's default)",
    ),
]
Shapes = Annotated[
    list[str] | None,
    typer.Option(
        "--shape",
        help="input shape NAME=1x3x224x224 (repeatable); build also takes TensorRT's range "
        "NAME=MIN:OPT:MAX, bench a name repeated for a mix of shapes",
    ),
]
TrustCode = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="allow sources whose reading runs code: pickle/joblib, TorchScript, .pt2, module.py",
    ),
]
Dynamic = Annotated[
    list[str] | None,
    typer.Option(
        "--dynamic",
        help="front ends: keep axis AXIS of input NAME dynamic in the export, NAME:0 (repeatable)",
    ),
]


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


class _StatusHandler(logging.Handler):
    """Shows the latest progress message of the library on a rich status line."""

    def __init__(self, status: Status) -> None:
        super().__init__(logging.INFO)
        self._status = status

    def emit(self, record: logging.LogRecord) -> None:
        self._status.update(f"[bold]{record.getMessage()}")


@contextlib.contextmanager
def progress(text: str) -> Iterator[None]:
    """A status spinner fed by the library's progress logs, on a terminal only (not in CI)."""
    if not show_progress():
        yield
        return
    root = logging.getLogger("duh")
    with err_console.status(f"[bold]{text}") as status:
        handler = _StatusHandler(status)
        old_level = root.level
        root.addHandler(handler)
        if root.level > logging.INFO:
            # Progress needs INFO records; the rich handler keeps showing only what -v asked for.
            for h in root.handlers:
                if h is not handler:
                    h.setLevel(old_level)
            root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)


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
                f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, markup=True, emoji=False
            )
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]; nothing was written")
            raise typer.Exit(130) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if _state["verbose"]:
                err_console.print_exception()
            where = f" writing {exc.filename}" if exc.filename else ""
            err_console.print(
                f"[bold red]error:[/] no space left on the device{escape(where)}; free some "
                "(the build cache: duh cache prune --max-size 10G) and run again",
                soft_wrap=True, markup=True, emoji=False,
            )  # fmt: skip
            raise typer.Exit(1) from None

    return wrapper


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (for --json), untouched by rich's markup."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def parse_key_values(values: Sequence[str] | None, option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options; ``option`` names the flag in the error."""
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {value!r} is not KEY=VALUE")
        out[key.strip()] = val.strip()
    return out


def parse_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse repeated ``--shape name=1x3x224x224`` options (ranges are left to
    ``shape_profile_options``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, sep, dims = value.partition("=")
        if ":" in dims:
            continue
        try:
            if not sep or not name:
                raise ValueError
            shapes[name.strip()] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ConfigError(
                f"--shape {value!r} is not NAME=DxDxD (e.g. input=1x3x224x224)"
            ) from None
    return shapes


def parse_dynamic(values: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse repeated ``--dynamic NAME:AXIS`` options (``NAME:0,1`` for several axes)."""
    axes: dict[str, set[int]] = {}
    for value in values or []:
        name, sep, spec = value.rpartition(":")
        try:
            if not sep or not name.strip():
                raise ValueError
            axes.setdefault(name.strip(), set()).update(int(a) for a in spec.split(","))
        except ValueError:
            raise ConfigError(
                f"--dynamic {value!r} is not NAME:AXIS (e.g. input:0 keeps the batch dynamic)"
            ) from None
    return {name: tuple(sorted(a)) for name, a in axes.items()}


def shape_profile_options(values: list[str] | None) -> dict[str, str]:
    """``--shape name=MIN:OPT:MAX`` (TensorRT optimization profiles) as target options
    ``profile.NAME``; fixed shapes are left to ``parse_shapes``."""
    options: dict[str, str] = {}
    for value in values or []:
        name, sep, dims = value.partition("=")
        if ":" not in dims:
            continue
        parts = dims.split(":")
        try:
            if not sep or not name.strip() or len(parts) != 3:
                raise ValueError
            for part in parts:
                [int(d) for d in part.lower().split("x")]
        except ValueError:
            raise ConfigError(
                f"--shape {value!r} is not NAME=MIN:OPT:MAX with each a shape DxDxD "
                "(e.g. input=1x3x224x224:8x3x224x224:32x3x224x224)"
            ) from None
        options[f"profile.{name.strip()}"] = dims.lower()
    return options
