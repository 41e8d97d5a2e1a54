"""``duh build``: compile a model for a target into a verified artifact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from duh.cli._common import (
    Dynamic,
    EngineOptions,
    JsonFlag,
    Shapes,
    TrustCode,
    console,
    err_console,
    handle_errors,
    parse_dynamic,
    parse_key_values,
    parse_shapes,
    print_json,
    progress,
    shape_profile_options,
)
from duh.errors import ConfigError

__all__ = ["build", "render_accuracy", "render_result", "result_json"]

# The compiler is imported inside the functions that use it: `duh serve` and `duh bench` load
# this module too (every command is registered on one app) and must not pay for the compiler.


def result_json(result: Any) -> dict[str, Any]:
    """The --json form of a build result."""
    from duh.compiler.pipeline import recipe_text

    return {
        "output": None if result.output is None else str(result.output),
        "requested": result.requested,
        "resolved": None if result.chosen is None else result.chosen.name,
        "dry_run": result.dry_run,
        "cached": result.cached,
        "seconds": round(result.seconds, 3),
        "candidates": [
            {**c.to_json(), "passes": list(c.passes), "recipe": recipe_text(c.passes)}
            for c in result.candidates
        ],
        "warnings": list(result.warnings),
        "selection": {"reason": result.reason, "not_tried": list(result.not_tried)},
        "manifest": None if result.manifest is None else result.manifest.to_json(),
    }


def _kept_candidate(result: Any) -> Any:
    """The candidate the artifact is: of those of the chosen target, the one whose quantize
    settings the manifest records (two OpenVINO INT8 candidates share a target: NNCF's, duh's)."""
    same = [c for c in result.candidates if result.chosen is not None and c.spec == result.chosen]
    if len(same) < 2 or result.manifest is None:
        return same[0] if same else None

    def quantize(passes: Any) -> Any:
        return next((p.get("config") for p in passes if p.get("name") == "quantize"), None)

    wanted = quantize(result.manifest.passes)
    return next((c for c in same if c.usable and quantize(c.passes) == wanted), same[0])


def render_result(result: Any) -> None:
    """Print a build result as rich tables."""
    if result.dry_run:
        console.print(
            f"[bold]dry run[/]: {result.source.path.name} for {result.requested!r}; nothing written"
        )
        for cand in result.candidates:
            console.print(f"\n[bold]{cand.spec.name}[/]")
            for step in cand.passes:
                cfg = ", ".join(f"{k}={v!r}" for k, v in step["config"].items())
                console.print(f"  {step['name']}({cfg})")
        if len(result.candidates) > 1:
            console.print("\nthe candidates are built, verified and measured; the fastest is kept")
        for line in result.not_tried:
            console.print(f"[dim]{line}[/]")
        return
    manifest = result.manifest
    table = Table(title=f"{result.source.path.name} → {result.output}", title_justify="left")
    budgeted = any(c.score is not None for c in result.candidates)
    for col in ("target", "verified", *(("budget",) if budgeted else ()), "median ms", "note"):
        table.add_column(col)
    from duh.compiler import candidate_labels

    kept = _kept_candidate(result)
    for cand, label in zip(result.candidates, candidate_labels(result.candidates), strict=True):
        chosen = cand is kept
        verified = (
            "-"
            if cand.report is None
            else ("[green]pass[/]" if cand.report.passed else "[red]fail[/]")
        )
        median = "-" if cand.median_ms is None else f"{cand.median_ms:.3f}"
        # engine and model text ("[batch, 3, 224, 224]", "[/opt/...]") is not rich markup
        note = escape(
            cand.error
            or (cand.report.failure_text() if cand.report and not cand.report.passed else "")
        )
        budget = () if not budgeted else (_budget_cell(cand.score),)
        table.add_row(("[bold]* " if chosen else "  ") + label, verified, *budget, median, note)
    console.print(table)
    if result.reason:
        console.print(f"selection: {escape(result.reason)}")
    for line in result.not_tried:
        console.print(f"[dim]{escape(line)}[/]")
    if manifest is not None:
        passes = Table(title="passes", title_justify="left")
        for col in ("pass", "nodes", "seconds", "notes"):
            passes.add_column(col)
        for rec in manifest.passes:
            passes.add_row(
                str(rec["name"]),
                f"{rec['nodes_before']} → {rec['nodes_after']}",
                f"{rec['seconds']:.2f}",
                escape("; ".join(rec["notes"])),
            )
        console.print(passes)
        for note in manifest.build.get("compile_notes", ()):
            console.print(f"engine: {escape(str(note))}")
        checks = manifest.checks
        if checks.get("outputs"):
            ct = Table(
                title=f"checks ({checks['samples']} inputs: {checks['input_source']})",
                title_justify="left",
            )
            for col in ("output", "max abs", "cosine", "top-1", "result"):
                ct.add_column(col)
            for out in checks["outputs"]:
                top1 = "-" if out["top1"] is None else f"{out['top1']:.3f}"
                ct.add_row(
                    escape(out["name"]),
                    f"{out['max_abs']:.3g}",
                    f"{out['cosine']:.6f}",
                    top1,
                    "[green]pass[/]" if out["passed"] else f"[red]{escape(out['reason'])}[/]",
                )
            console.print(ct)
            framework = checks.get("framework")
            if framework:
                made = manifest.source.get("frontend", {})
                worst = min(framework["outputs"], key=lambda o: o["cosine"])
                verdict = "[green]pass[/]" if framework["passed"] else "[red]fail[/]"
                console.print(
                    f"against {made.get('frontend', 'the framework')} {made.get('version', '')} "
                    f"itself: {verdict} (lowest cosine {worst['cosine']:.6f}, max abs "
                    f"{max(o['max_abs'] for o in framework['outputs']):.3g})"
                )
        else:
            console.print("[yellow]verification skipped (--no-verify)[/]")
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    how = "reused from the build cache" if result.cached else "built"
    console.print(f"{how} [bold]{result.chosen.name}[/] in {result.seconds:.1f}s → {result.output}")


def _budget_cell(score: Any) -> str:
    """A candidate's drop against the accuracy budget, green within it, red over it."""
    if score is None:
        return "-"
    color = "green" if score.met else "red"
    return f"[{color}]{score.drop:.4g} {'<=' if score.met else '>'} {score.max_drop:g}[/]"


@handle_errors
def build(
    model: Path | None = typer.Argument(
        None,
        help="the source model: .onnx, or a front end's (.pt2, module.py:factory, .pt, ...); "
        "or -c RECIPE",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="project recipe: duh.toml, or pyproject.toml's [tool.duh]"
    ),
    only: list[str] | None = typer.Option(
        None, "--only", help="with -c: build only this model (or MODEL/TARGET); repeatable"
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="build every stage afresh; read and write no build cache"
    ),
    target: str = typer.Option(
        "cpu",
        "--target",
        "-t",
        help="target name, e.g. cpu, cpu-int8, openvino:cpu-bf16 (see `duh targets`)",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="artifact directory to write (default MODEL.TARGET.duh)"
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="TOML file of [[pass]] tables (name + options) as the pipeline"
    ),
    passes: str | None = typer.Option(
        None, "--passes", help="comma-separated passes replacing the target's default pipeline"
    ),
    calib: str | None = typer.Option(
        None,
        "--calib",
        help="calibration data: .npz, a directory of .npy/.npz or images, or 'synthetic'",
    ),
    calib_samples: int = typer.Option(256, "--calib-samples", help="calibration samples to use"),
    calib_config: Path | None = typer.Option(
        None,
        "--calib-config",
        help="TOML file with image preprocessing (resize, crop, mean, std, layout, ...)",
    ),
    calib_preprocess: str | None = typer.Option(
        None,
        "--calib-preprocess",
        help="image preprocessing as KEY=VALUE,...: resize=256,crop=224,mean=0.485/0.456/0.406,"
        "std=...,order=bgr,layout=nchw,interpolation=lanczos (overrides --calib-config)",
    ),
    calib_method: str | None = typer.Option(
        None, "--calib-method", help="INT8 calibrator: minmax (default), entropy or percentile"
    ),
    quantize_mode: str | None = typer.Option(
        None,
        "--quantize-mode",
        help="static (QDQ), dynamic, int4 (weight-only) or auto (dynamic for transformers/RNNs)",
    ),
    keep_io_types: bool | None = typer.Option(
        None,
        "--keep-io-types/--no-keep-io-types",
        help="fp16/bf16: keep graph inputs and outputs float32 (default: keep)",
    ),
    shape: Shapes = None,
    tune_trials: int = typer.Option(
        0,
        "--tune-trials",
        help="tvm: MetaSchedule tuning trials (records cached per model, target, TVM version)",
    ),
    option: EngineOptions = None,
    no_verify: bool = typer.Option(
        False, "--no-verify", help="skip comparing the artifact with the source"
    ),
    check_data: Path | None = typer.Option(
        None,
        "--check-data",
        help="real inputs to verify on, in --calib's formats: .npz, a directory of .npy/.npz, "
        "or of images (preprocessed as --calib-preprocess/--calib-config say)",
    ),
    check_samples: int = typer.Option(8, "--check-samples", help="inputs to verify on"),
    eval: Path | None = typer.Option(
        None,
        "--eval",
        help="accuracy budget: eval data in --calib's formats; INT8 keeps its most sensitive "
        "layers in float until the metric's drop is within --max-drop",
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="labels of --eval: an array of its .npz by name, or a .npy file"
    ),
    metric: str | None = typer.Option(
        None,
        "--metric",
        help="top1 (default), cosine, mse (against --labels, or the fp32 model's outputs), or "
        "module:fn (your code, with --trust-code)",
    ),
    max_drop: float | None = typer.Option(
        None, "--max-drop", help="the largest drop of --metric allowed (default 0.01)"
    ),
    drop_type: str | None = typer.Option(
        None, "--drop-type", help="absolute (default) or relative (a fraction of fp32's metric)"
    ),
    report_layers: bool = typer.Option(
        False, "--report-layers", help="print the layers' INT8 sensitivity table (with --eval)"
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="with --report-layers: draw the sensitivity table into FILE.png"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the resolved engines and pipelines; write nothing"
    ),
    trust_code: TrustCode = False,
    dynamic: Dynamic = None,
    quantizer: str | None = typer.Option(
        None,
        "--quantizer",
        help="quantize in the framework before export: inc (Intel Neural Compressor, PyTorch; "
        "inc:static, inc:rtn, inc:smoothquant), with --target cpu-int8 and --calib",
    ),
    sign: Path | None = typer.Option(
        None, "--sign", help="Ed25519 private key (PEM) to sign the manifest with (duh keygen)"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Compile MODEL for a target into a verified artifact directory."""
    from duh.recipe import Recipe, build_entry, entry_from_options, load_recipe_file
    from duh.runtime import check_signing_key, sign_artifact

    if sign is not None:
        check_signing_key(sign)  # a wrong key fails now, not after the build

    if config is not None:
        if model is not None:
            raise ConfigError("give either MODEL (and its flags) or -c RECIPE, not both")
        plan = load_recipe_file(config).only(only or [])
    elif model is None:
        raise ConfigError("give the model to build (duh build MODEL) or a recipe (-c duh.toml)")
    else:
        shapes = {n: d for n, _, d in (v.partition("=") for v in shape or [])}
        parse_shapes(shape), shape_profile_options(shape)  # the CLI's own checks of --shape
        cli_keys = {
            "target": target, "output": output, "recipe": recipe, "passes": passes,
            "calib": calib, "calib_samples": calib_samples, "calib_config": calib_config,
            "calib_preprocess": calib_preprocess, "calib_method": calib_method,
            "quantize_mode": quantize_mode, "keep_io_types": keep_io_types, "shape": shapes,
            "tune_trials": tune_trials, "option": parse_key_values(option, "--option"),
            "verify": not no_verify, "check_data": check_data, "check_samples": check_samples,
            "trust_code": trust_code, "dynamic": parse_dynamic(dynamic) or None,
            "eval": eval, "labels": labels, "metric": metric, "max_drop": max_drop,
            "drop_type": drop_type, "report_layers": report_layers or plot is not None or None,
            "plot": plot,
            "quantizer": quantizer,
        }  # fmt: skip
        plan = Recipe((entry_from_options(model, cli_keys),))
    if no_cache:
        plan = replace(plan, builds=tuple(replace(e, cache=False) for e in plan.builds))
    results = []
    for entry in plan.builds:
        with progress(f"building {entry.model.name} for {entry.target}"):
            result = build_entry(entry, dry_run)
        results.append(result)
        if sign is not None and result.output is not None:
            sign_artifact(result.output, sign)
    if as_json:
        reports = [
            {"name": e.name, **result_json(r)} for e, r in zip(plan.builds, results, strict=True)
        ]
        recipe_json = plan.to_json()
        print_json({**reports[0], "recipe": recipe_json} if config is None else
                   {"recipe": recipe_json, "builds": reports})  # fmt: skip
    else:
        for entry, result in zip(plan.builds, results, strict=True):
            render_result(result)
            render_accuracy(result, entry.report_layers)
    for entry, result in zip(plan.builds, results, strict=True):
        if entry.plot is not None and not dry_run:
            _plot(result, entry.plot)


def render_accuracy(result: Any, layers: bool) -> None:
    """Print the accuracy budget's outcome and (``layers``) the sensitivity table."""
    section = None if result.manifest is None else result.manifest.build.get("accuracy")
    if section is None:
        return
    head = (
        f"accuracy budget ({section['metric']}, {section['drop_type']} drop <= "
        f"{section['max_drop']:g}, {section['samples']} eval samples): fp32 {section['fp32']:.4f}, "
    )
    precision = section.get("precision", "int8")
    if precision != "int8":
        console.print(f"{head}built {precision} {section['int8']:.4f} (drop {section['drop']:.4f})")
    else:
        console.print(
            f"{head}plain INT8 {section['int8_plain']:.4f}, built {section['int8']:.4f} (drop "
            f"{section['drop']:.4f}) with {len(section['float_layers'])} of "
            f"{section['quantized_layers']} quantized layers in float"
        )
    if not layers:
        return
    if not section["sensitivity"]:
        console.print("no sensitivity table: this candidate has no static INT8 layers to rank")
        return
    title = "INT8 sensitivity (relative RMS error on eval samples)"
    table = Table(title=title, title_justify="left")
    for col in ("layer", "op", "error", "adds", "kept"):
        table.add_column(col)
    for row in section["sensitivity"]:
        table.add_row(row["node"], row["op_type"], f"{row['error']:.4f}", f"{row['added']:.4f}",
                      "[bold]float[/]" if row["float"] else "int8")  # fmt: skip
    console.print(table)


def _plot(result: Any, path: Path) -> None:
    from duh.compiler import plot_sensitivity

    section = None if result.manifest is None else result.manifest.build.get("accuracy")
    if not section or not section["sensitivity"]:
        raise ConfigError(
            f"--plot {path}: the build ranked no layers (it needs --eval and a static INT8 target)"
        )
    title = f"{result.source.path.name} on {result.chosen.name}"
    plot_sensitivity(section["sensitivity"], path, title)
    err_console.print(f"sensitivity plot → {path}")
