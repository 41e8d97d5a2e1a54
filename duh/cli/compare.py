"""``duh compare``: hold models and artifacts to a reference's outputs on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from duh.cli._common import (
    EngineOptions,
    JsonFlag,
    Threads,
    console,
    handle_errors,
    parse_key_values,
    print_json,
    progress,
)
from duh.errors import ConfigError

__all__ = ["compare"]

_FIELDS = {
    "--atol": "atol",
    "--rtol": "rtol",
    "--min-cosine": "min_cosine",
    "--min-top1": "min_top1",
}


def _tolerances(flags: dict[str, list[str] | None]) -> dict[str, dict[str, float]]:
    """``--atol logits=1e-3`` (or ``--atol 1e-3`` for every output) as {output: {field: v}}."""
    out: dict[str, dict[str, float]] = {}
    for flag, values in flags.items():
        given = [v if "=" in v else f"*={v}" for v in values or []]
        for name, text in parse_key_values(given, flag).items():
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{flag} {name}={text!r}: the value must be a number") from None
            if value < 0:
                raise ConfigError(f"{flag} {name}={text}: the value must not be negative")
            out.setdefault(name, {})[_FIELDS[flag]] = value
    return out


def _num(value: Any, digits: str = ".3g") -> str:
    return "-" if value is None else (value if isinstance(value, str) else format(value, digits))


def _render(report: Any) -> None:
    ref = report.reference
    console.print(
        f"reference: [bold]{escape(ref.label)}[/] ({ref.kind}, {ref.target or ref.engine}, "
        f"{ref.precision}); data: {escape(report.data['source'])}, {report.data['feeds']} feeds",
        soft_wrap=True,
    )
    for result in report.results:
        sub = result.subject
        table = Table(
            title=f"{escape(sub.label)} ({sub.target or sub.engine}, {sub.precision})",
            title_justify="left",
        )
        for col in ("output", "max abs", "mean abs", "max rel", "cosine", "top-1", "result"):
            table.add_column(col)
        for out in result.outputs:
            table.add_row(
                escape(out.name),
                _num(out.max_abs),
                _num(out.mean_abs),
                _num(out.max_rel),
                _num(out.cosine, ".6f"),
                _num(out.top1, ".4f"),
                "[green]pass[/]" if out.passed else "[red]FAIL[/]",
            )
        console.print(table)
        for out in result.outputs:
            if not out.passed:
                console.print(f"  [red]{escape(out.name)}[/]: {escape(out.reason)}", soft_wrap=True)
            if out.worst:
                worst = "; ".join(
                    f"feed {w.feed} {list(w.index)}: {w.reference:.6g} vs {w.subject:.6g} "
                    f"(Δ {w.abs_diff:.2g})"
                    for w in out.worst[:3]
                )
                console.print(f"  worst {escape(out.name)}: {worst}", soft_wrap=True)
    if report.saved is not None:
        console.print(
            f"recorded {escape(ref.label)}'s outputs in {escape(str(report.saved))}",
            soft_wrap=True,
        )
    if not report.results:
        return
    bad = [r for r in report.results if not r.passed]
    if not bad:
        console.print(f"[green]match[/]: {len(report.results)} subject(s) within tolerance")
    for r in bad:
        failed = ", ".join(o.name for o in r.outputs if not o.passed)
        console.print(
            f"[bold red]mismatch[/]: {escape(r.subject.label)} differs from {escape(ref.label)} "
            f"in {escape(failed)}",
            soft_wrap=True,
        )


@handle_errors
def compare(
    subjects: list[Path] = typer.Argument(
        ..., help=".onnx models or .duh artifacts (any engine); the first is the reference"
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        help="inputs, in --check-data's formats: .npz (arrays named after the inputs), .npy, "
        "a directory of .npy/.npz files or of images",
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        help="compare on at most N feeds (samples, at a dynamic batch; default: all)",
    ),
    preprocess: str | None = typer.Option(
        None,
        "--preprocess",
        help="image preprocessing as KEY=VALUE,... (as build's --calib-preprocess)",
    ),
    preprocess_config: Path | None = typer.Option(
        None, "--preprocess-config", help="TOML file with image preprocessing (as --calib-config)"
    ),
    atol: list[str] | None = typer.Option(
        None, "--atol", help="absolute tolerance OUTPUT=V, or V for every output (repeatable)"
    ),
    rtol: list[str] | None = typer.Option(
        None,
        "--rtol",
        help="tolerance relative to the reference's largest magnitude, OUTPUT=V or V",
    ),
    min_cosine: list[str] | None = typer.Option(
        None, "--min-cosine", help="lowest cosine similarity, OUTPUT=V or V"
    ),
    min_top1: list[str] | None = typer.Option(
        None, "--min-top1", help="lowest top-1 agreement, OUTPUT=V or V"
    ),
    save_outputs: Path | None = typer.Option(
        None, "--save-outputs", help="record the first subject's outputs in FILE.npz (golden)"
    ),
    load_outputs: Path | None = typer.Option(
        None, "--load-outputs", help="compare every subject with golden outputs from FILE.npz"
    ),
    worst: int = typer.Option(5, "--worst", help="worst elements to report per output"),
    threads: Threads = None,
    option: EngineOptions = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare outputs of models and artifacts on real data; exit 11 on a mismatch."""
    from duh.compare import MISMATCH_EXIT_CODE, CompareRequest
    from duh.compare import compare as run_compare

    pre: Any = preprocess_config
    if preprocess is not None:
        pre = {"config": preprocess_config, "spec": preprocess}
    request = CompareRequest(
        subjects=tuple(subjects),
        data=data,
        samples=samples,
        preprocess=pre,
        tolerances=_tolerances(
            {"--atol": atol, "--rtol": rtol, "--min-cosine": min_cosine, "--min-top1": min_top1}
        ),
        save_outputs=save_outputs,
        load_outputs=load_outputs,
        worst=worst,
        threads=threads,
        engine_options=parse_key_values(option, "--option"),
    )
    with progress(f"comparing {len(subjects)} subject(s) on {data.name}"):
        report = run_compare(request)
    if as_json:
        print_json(report.to_json())
    else:
        _render(report)
    if not report.passed:
        raise typer.Exit(MISMATCH_EXIT_CODE)
