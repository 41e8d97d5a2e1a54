"""Running a recipe: each entry becomes one call of ``duh.compiler.build``."""

from __future__ import annotations

from typing import Any

from duh.compiler import AccuracyBudget, BuildResult, build
from duh.compiler.pipeline import load_recipe
from duh.compiler.verify import Tolerance, tolerance_for
from duh.errors import ConfigError
from duh.recipe._model import BuildEntry

__all__ = ["build_entry", "build_kwargs"]


def _shapes(entry: BuildEntry) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Fixed shapes, and ``MIN:OPT:MAX`` ranges as the ``profile.NAME`` target options."""
    shapes, profiles = {}, {}
    for name, dims in entry.shape.items():
        if ":" in dims:
            profiles[f"profile.{name}"] = dims
        else:
            shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes, profiles


def _tolerance(entry: BuildEntry) -> Tolerance | None:
    if entry.tolerance is None:
        return None
    if entry.target.rsplit("-", 1)[-1] in ("fp32", "fp16", "bf16", "int8"):
        base = tolerance_for(entry.target.rsplit("-", 1)[-1])
    else:
        base = tolerance_for("fp32")
    fields = {**{k: getattr(base, k) for k in base.to_json()}, **entry.tolerance}
    return Tolerance(**fields)


def _accuracy(entry: BuildEntry) -> AccuracyBudget | None:
    """The accuracy budget of ``entry``: eval data, metric and max drop, checked together."""
    if entry.eval is None:
        given = [f"--{k.replace('_', '-')}" for k in ("labels", "metric", "max_drop", "drop_type")
                 if getattr(entry, k) is not None]  # fmt: skip
        if given:
            raise ConfigError(
                f"{', '.join(given)} set an accuracy budget, which needs eval data: add --eval DATA"
            )
        return None
    return AccuracyBudget(
        entry.eval,
        entry.metric or "top1",
        0.01 if entry.max_drop is None else float(entry.max_drop),
        entry.drop_type or "absolute",
        entry.labels,
        report_layers=entry.report_layers or entry.plot is not None,
    )


def build_kwargs(entry: BuildEntry) -> dict[str, Any]:
    """The keyword arguments of ``duh.compiler.build`` that ``entry`` stands for."""
    if entry.recipe is not None and entry.passes is not None:
        raise ConfigError(f"{entry.name}: give either passes or recipe, not both")
    passes: Any = entry.passes
    if entry.recipe is not None:
        passes = load_recipe(entry.recipe)
    elif isinstance(passes, tuple):
        from duh.targets import PassSpec

        passes = [PassSpec(str(p["name"]), dict(p["config"])) for p in passes]
    calib_options: dict[str, Any] = {}
    if entry.calib_config is not None:
        calib_options["preprocess"] = entry.calib_config
    if entry.calib_preprocess is not None:
        calib_options["preprocess"] = {"config": entry.calib_config, "spec": entry.calib_preprocess}
    pass_options = {k: dict(v) for k, v in entry.pass_options.items()}
    if entry.calib_method is not None:
        pass_options.setdefault("quantize", {})["calibrator"] = entry.calib_method
    if entry.quantize_mode is not None:
        pass_options.setdefault("quantize", {})["mode"] = entry.quantize_mode
    if entry.keep_io_types is not None:
        for name in ("fp16", "bf16"):
            pass_options.setdefault(name, {})["keep_io_types"] = entry.keep_io_types
    shapes, profiles = _shapes(entry)
    tune = {"tune_trials": str(entry.tune_trials)} if entry.tune_trials else {}
    return {
        "model": entry.model,
        "target": entry.target,
        "output": entry.output,
        "passes": passes,
        "calib": None if entry.calib is None else str(entry.calib),
        "calib_samples": entry.calib_samples,
        "calib_options": calib_options,
        "shapes": shapes,
        "verify": entry.verify,
        "check_samples": entry.check_samples,
        "check_data": entry.check_data,
        "tolerance": _tolerance(entry),
        "target_options": {**entry.option, **profiles, **tune},
        "pass_options": pass_options,
        "cache": entry.cache,
        "accuracy": _accuracy(entry),
        "trust_code": entry.trust_code,
        "dynamic": {k: tuple(int(a) for a in v) for k, v in entry.dynamic.items()},
        "quantizer": entry.quantizer,
    }


def build_entry(entry: BuildEntry, dry_run: bool = False) -> BuildResult:
    """Build one recipe entry (``dry_run``: resolve it and write nothing)."""
    kwargs = build_kwargs(entry)
    return build(kwargs.pop("model"), dry_run=dry_run, **kwargs)
