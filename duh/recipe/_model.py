"""The project recipe: ``duh.toml`` (or ``[tool.duh]`` in pyproject.toml) read into frozen values.

One key per flag of ``duh build`` (same name, ``-`` as ``_``), valid at three levels, the nearest
winning: ``[defaults]`` for every build, ``[models.NAME]`` for each target of that model, and
each entry of the model's ``targets`` (a target name, or a table with ``target`` and any other
key). Paths are relative to the recipe's directory. An unknown key or a value of the wrong type
is one ``ConfigError`` naming it and what is valid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from duh._toml import read_toml
from duh.errors import ConfigError

__all__ = ["BUILD_KEYS", "BuildEntry", "Recipe", "entry_from_options", "load_recipe_file"]

# Every key a build takes: its flag of `duh build` and what it holds.
BUILD_KEYS: dict[str, str] = {
    "model": "the source model (.onnx); the argument of duh build",
    "target": "target name, e.g. cpu, cpu-int8, openvino:cpu-bf16 (--target)",
    "output": "artifact directory to write (--output; default MODEL.TARGET.duh)",
    "recipe": "TOML file of [[pass]] tables as the pipeline (--recipe)",
    "passes": "the pipeline: 'a,b' or [{name = 'a', option = value}, ...] (--passes)",
    "calib": "calibration data: .npz, a directory, or 'synthetic' (--calib)",
    "calib_samples": "calibration samples to use (--calib-samples)",
    "calib_config": "TOML file with image preprocessing (--calib-config)",
    "calib_preprocess": "image preprocessing KEY=VALUE,... (--calib-preprocess)",
    "calib_method": "INT8 calibrator: minmax, entropy or percentile (--calib-method)",
    "quantize_mode": "static, dynamic, int4 or auto (--quantize-mode)",
    "keep_io_types": "fp16/bf16: keep graph inputs and outputs float32 (--keep-io-types)",
    "shape": "input shapes, {NAME = 'DxDxD' or [D, D] or 'MIN:OPT:MAX'} (--shape)",
    "tune_trials": "tvm: MetaSchedule tuning trials (--tune-trials)",
    "option": "engine options {KEY = VALUE} (--option)",
    "verify": "compare the artifact with the source (false: --no-verify)",
    "check_data": "real inputs to verify on (--check-data)",
    "check_samples": "inputs to verify on (--check-samples)",
    "eval": "accuracy budget: eval data, in calib's formats (--eval)",
    "labels": "labels of the eval data: an array of its .npz by name, or a file (--labels)",
    "metric": "accuracy budget's metric: top1, cosine, mse or module:fn (--metric)",
    "max_drop": "accuracy budget: the largest drop of the metric allowed (--max-drop)",
    "drop_type": "accuracy budget: absolute or relative drop (--drop-type)",
    "report_layers": "rank the layers by INT8 sensitivity for the report (--report-layers)",
    "plot": "draw the INT8 sensitivity table into this .png (--plot; needs matplotlib)",
    "cache": "use the build cache (false: --no-cache)",
    "tolerance": "accuracy budget {atol, rtol, min_cosine, min_top1, elementwise}",
    "pass_options": "options of the passes that run, {PASS = {FIELD = VALUE}}",
    "bench": "bench gates for CI, {fail_if = ['p99_ms>20', ...]} (duh bench --fail-if)",
    "trust_code": "allow sources whose reading runs code: pickle, TorchScript, module.py",
    "dynamic": "front ends: axes kept dynamic in the export, {NAME = [0]} (--dynamic NAME:0)",
    "quantizer": "quantize in the framework before export: inc, inc:RECIPE (--quantizer)",
}
_PATHS = ("model", "output", "recipe", "calib", "calib_config", "check_data", "eval", "plot")
_TYPES: dict[str, tuple[type, ...]] = {
    "calib_samples": (int,),
    "tune_trials": (int,),
    "check_samples": (int,),
    "max_drop": (int, float),
    "report_layers": (bool,),
    "keep_io_types": (bool,),
    "verify": (bool,),
    "cache": (bool,),
    "passes": (str, list),
    "shape": (dict,),
    "option": (dict,),
    "tolerance": (dict,),
    "pass_options": (dict,),
    "bench": (dict,),
    "trust_code": (bool,),
    "dynamic": (dict,),
    "quantizer": (str,),
}
_TOP_KEYS = ("defaults", "models")
_BENCH_KEYS = ("fail_if",)


@dataclass(frozen=True, slots=True)
class BuildEntry:
    """One artifact to build: a model, a target, and every option of ``duh build``."""

    name: str
    model: Path
    target: str = "cpu"
    output: Path | None = None
    recipe: Path | None = None
    passes: str | tuple[Mapping[str, Any], ...] | None = None
    calib: str | Path | None = None
    calib_samples: int = 256
    calib_config: Path | None = None
    calib_preprocess: str | None = None
    calib_method: str | None = None
    quantize_mode: str | None = None
    keep_io_types: bool | None = None
    shape: Mapping[str, str] = field(default_factory=dict)
    tune_trials: int = 0
    option: Mapping[str, str] = field(default_factory=dict)
    verify: bool = True
    check_data: Path | None = None
    check_samples: int = 8
    eval: Path | None = None
    labels: str | None = None
    metric: str | None = None
    max_drop: float | None = None
    drop_type: str | None = None
    report_layers: bool = False
    plot: Path | None = None
    cache: bool = True
    tolerance: Mapping[str, Any] | None = None
    pass_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    bench: Mapping[str, Any] = field(default_factory=dict)
    trust_code: bool = False
    dynamic: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    quantizer: str | None = None

    @property
    def model_name(self) -> str:
        """The name of the model this entry builds (the part of ``name`` before the target)."""
        return self.name.split("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        """Every key with its value (paths as strings), as ``--dry-run --json`` prints it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [dict(v) for v in value]
            elif isinstance(value, Mapping):
                value = {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Recipe:
    """Every build a recipe names, in file order, and the file it came from (None: the CLI)."""

    builds: tuple[BuildEntry, ...]
    path: Path | None = None

    def only(self, names: Sequence[str]) -> Recipe:
        """The builds of the models (or ``MODEL/TARGET`` entries) in ``names``; none left is an
        error naming the choices."""
        if not names:
            return self
        kept = tuple(b for b in self.builds if b.model_name in names or b.name in names)
        known = {b.model_name for b in self.builds} | {b.name for b in self.builds}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"--only {', '.join(unknown)}: not in the recipe; its models and builds are "
                + ", ".join(sorted(known))
            )
        return Recipe(kept, self.path)

    def to_json(self) -> dict[str, Any]:
        """The recipe as ``--dry-run --json`` prints it."""
        return {
            "path": None if self.path is None else str(self.path),
            "builds": [b.to_json() for b in self.builds],
        }


def _where(source: str, place: str) -> str:
    return f"{source}: {place}" if place else source


def _check_table(table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    for key in table:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key {key!r}; the valid keys are {', '.join(valid)}"
            )


def _value(key: str, value: Any, base: Path, where: str) -> Any:
    """One build key's value, checked and normalized (paths resolved against ``base``)."""
    expected = _TYPES.get(key, (str,))
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join(
            "table" if t is dict else "array" if t is list else t.__name__ for t in expected
        )
        raise ConfigError(f"{where}: {key} must be {names}, got {value!r}")
    return _normalized(key, value, base, where)


def _normalized(key: str, value: Any, base: Path, where: str) -> Any:
    if key in _PATHS and not (key == "calib" and value == "synthetic"):
        return Path(os.path.normpath(base / value))
    if key == "passes" and isinstance(value, list):
        return _passes(value, where)
    if key == "shape":
        return {str(k): _shape(k, v, where) for k, v in value.items()}
    if key == "option":
        return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    if key == "tolerance":
        return _tolerance(value, where)
    if key == "pass_options":
        for name, options in value.items():
            if not isinstance(options, dict):
                raise ConfigError(f"{where}: pass_options.{name} must be a table of options")
        return {str(k): dict(v) for k, v in value.items()}
    if key == "bench":
        return _bench(value, where)
    return value


def _passes(steps: list[Any], where: str) -> tuple[Mapping[str, Any], ...]:
    from duh.passes import create_pass

    out = []
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ConfigError(
                f"{where}: passes #{i} must be a table with a name, e.g. {{name = 'simplify'}}"
            )
        config = {k: v for k, v in step.items() if k != "name"}
        create_pass(step["name"], config)
        out.append({"name": step["name"], "config": config})
    return tuple(out)


def _shape(name: str, value: Any, where: str) -> str:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    ):
        return "x".join(str(d) for d in value)
    if isinstance(value, str):
        parts = value.lower().split(":")
        try:
            if len(parts) not in (1, 3):
                raise ValueError
            for part in parts:
                [int(d) for d in part.split("x")]
        except ValueError:
            pass
        else:
            return value.lower()
    raise ConfigError(
        f"{where}: shape.{name} must be [D, D, ...], 'DxDxD' or 'MIN:OPT:MAX', got {value!r}"
    )


def _tolerance(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    from duh.compiler.verify import Tolerance

    valid = [f.name for f in fields(Tolerance)]
    _check_table(value, valid, f"{where}: tolerance")
    for key, item in value.items():
        kind = bool if key == "elementwise" else (int, float)
        if not isinstance(item, kind) or (key != "elementwise" and isinstance(item, bool)):
            raise ConfigError(f"{where}: tolerance.{key} must be a number, got {item!r}")
    return dict(value)


def _bench(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    from duh.bench import parse_gate

    _check_table(value, _BENCH_KEYS, f"{where}: bench")
    gates = value.get("fail_if", [])
    if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
        raise ConfigError(f"{where}: bench.fail_if must be an array of gates like 'p99_ms>20'")
    for gate in gates:
        parse_gate(gate)
    return {"fail_if": list(gates)}


def _options(
    table: Mapping[str, Any], base: Path, where: str, valid: Sequence[str]
) -> dict[str, Any]:
    _check_table(table, valid, where)
    return {k: _value(k, v, base, where) for k, v in table.items()}


def _read(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("duh")
        if not isinstance(table, dict):
            raise ConfigError(f"{path} has no [tool.duh] table; add one or give a duh.toml")
        return table
    return data


def load_recipe_file(path: str | Path) -> Recipe:
    """Read and check a project recipe (``duh.toml``, or ``pyproject.toml``'s ``[tool.duh]``)."""
    path = Path(path)
    data, base, name = _read(path), path.parent, path.name
    _check_table(data, _TOP_KEYS, name)
    per_target = [k for k in BUILD_KEYS if k != "model"]
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{name}: defaults must be a table of build keys")
    common = _options(
        defaults, base, f"{name}: [defaults]", [k for k in per_target if k != "output"]
    )
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            f"{name}: no models; add [models.NAME] tables, e.g. [models.resnet] "
            "model = 'resnet.onnx'"
        )
    builds = []
    for model_name, table in models.items():
        where = f"{name}: [models.{model_name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        targets = table.get("targets", [table.get("target", "cpu")])
        rest = {k: v for k, v in table.items() if k != "targets"}
        model_keys = _options(rest, base, where, [*BUILD_KEYS, "targets"])
        if "model" not in model_keys:
            raise ConfigError(f"{where} has no model; add model = 'path/to/model.onnx'")
        if not isinstance(targets, list) or not targets:
            raise ConfigError(f"{where}: targets must be a non-empty array of names or tables")
        for i, item in enumerate(targets, 1):
            spot = f"{where} targets #{i}"
            item = {"target": item} if isinstance(item, str) else item
            if not isinstance(item, dict) or not isinstance(item.get("target"), str):
                raise ConfigError(f"{spot} must be a target name or a table with target = '...'")
            keys = {**common, **model_keys, **_options(item, base, spot, per_target)}
            builds.append(BuildEntry(name=f"{model_name}/{keys['target']}", **keys))
    _check_unique(builds, name)
    return Recipe(tuple(builds), path)


def _check_unique(builds: Sequence[BuildEntry], where: str) -> None:
    seen: dict[str, str] = {}
    for b in builds:
        if b.name in seen:
            raise ConfigError(f"{where}: {b.name} is named twice; give one of them another target")
        out = str(b.output) if b.output is not None else None
        if out is not None and out in seen.values():
            raise ConfigError(
                f"{where}: {b.name} writes {out} like another build; give another output"
            )
        seen[b.name] = out or b.name


def entry_from_options(model: Path, options: Mapping[str, Any]) -> BuildEntry:
    """The one-build recipe entry of ``duh build MODEL --flags`` (values as the CLI parsed them)."""
    unknown = sorted(set(options) - set(BUILD_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown build option {unknown[0]!r}; the options are {', '.join(BUILD_KEYS)}"
        )
    kept = {k: v for k, v in options.items() if v is not None and k != "model"}
    target = kept.get("target", "cpu")
    return BuildEntry(name=f"{model.stem}/{target}", model=model, **kept)
