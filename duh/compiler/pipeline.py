"""The PassManager: runs a configured list of passes and records what each did."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from duh._toml import read_toml
from duh.compiler._cache_keys import cpu_class, pass_versions, stage_key
from duh.compiler._stage_cache import StageCache
from duh.errors import ConfigError, DuhError, PassError
from duh.passes import Pass, PassContext, create_pass, node_count, pass_config
from duh.targets import PassSpec

__all__ = ["PassManager", "PassRecord", "load_recipe", "parse_pass_list", "recipe_text"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PassRecord:
    """What one pass did: its config, time, and node counts before and after."""

    name: str
    config: dict[str, object]
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    notes: tuple[str, ...]
    # Read back from the build cache rather than run (``seconds`` is then the first run's).
    cached: bool = False

    def to_json(self) -> dict[str, object]:
        """The form stored in the manifest."""
        return {
            "name": self.name,
            "config": self.config,
            "seconds": round(self.seconds, 4),
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "changed": self.changed,
            "notes": list(self.notes),
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], cached: bool = False) -> PassRecord:
        """The record ``to_json`` wrote (as the build cache stores it)."""
        return cls(
            str(data["name"]), dict(data["config"]), float(data["seconds"]),
            int(data["nodes_before"]), int(data["nodes_after"]), bool(data["changed"]),
            tuple(data["notes"]), cached,
        )  # fmt: skip


def parse_pass_list(text: str) -> list[PassSpec]:
    """Parse ``--passes simplify,cleanup`` into specs (each with its default config)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    specs = [PassSpec(n) for n in names]
    for spec in specs:
        create_pass(spec.name, spec.config)
    return specs


def load_recipe(path: str | Path) -> list[PassSpec]:
    """Read a TOML recipe: ``[[pass]]`` tables, each a ``name`` and that pass's options."""
    path = Path(path)
    data = read_toml(path)
    steps = data.get("pass")
    if not isinstance(steps, list) or not steps or set(data) - {"pass"}:
        raise ConfigError(
            f"recipe {path.name} must hold only [[pass]] tables, each with a name and options, "
            'e.g. [[pass]] name = "simplify"'
        )
    specs = []
    for i, step in enumerate(steps, 1):
        options = dict(step)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"recipe {path.name}: pass #{i} has no name")
        spec = PassSpec(name, options)
        create_pass(spec.name, spec.config)
        specs.append(spec)
    return specs


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    return json.dumps(str(value))


def recipe_text(steps: Sequence[Mapping[str, object]]) -> str:
    """A pipeline (as ``PassManager.describe`` gives it) written as a TOML recipe."""
    blocks = []
    for step in steps:
        lines = ["[[pass]]", f"name = {json.dumps(step['name'])}"]
        config = step.get("config", {})
        assert isinstance(config, Mapping)
        lines += [f"{key} = {_toml_value(value)}" for key, value in config.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


class PassManager:
    """Runs passes in order; checks the model after each, so a broken pass is caught at once.

    With ``cache``, the model after each pass prefix is stored under a key over the input model's
    bytes, the target, the calibration data, each pass's name, config and library versions, and
    the CPU class; a run starts after the longest prefix the cache holds. A disabled cache also
    turns off the calibration-range cache the passes keep.
    """

    def __init__(self, specs: Sequence[PassSpec], cache: StageCache | None = None) -> None:
        self.passes: list[Pass] = [create_pass(s.name, s.config) for s in specs]
        self.cache = cache

    def describe(self) -> list[dict[str, object]]:
        """Each pass's name and config, as ``--dry-run`` prints them."""
        return [{"name": p.name, "config": pass_config(p)} for p in self.passes]

    def run(
        self, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, list[PassRecord]]:
        """Run every pass; return the final model and a record per pass."""
        if self.cache is None:
            return self._run_from(0, model, ctx, [], [])
        if not self.cache.enabled:
            return self._run_from(0, model, replace(ctx, cache_dir=None), [], [])
        keys = self._keys(model, ctx)
        for i in reversed(range(len(self.passes))):
            with self.cache.lookup(keys[i], f"pass {self.passes[i].name}") as entry:
                if entry is not None:
                    hit = onnx.load(str(entry.files_dir / "model.onnx"))
                    records = [PassRecord.from_json(r, True) for r in entry.payload["records"]]
                    return self._run_from(i + 1, hit, ctx, records, keys)
        return self._run_from(0, model, ctx, [], keys)

    def _keys(self, model: onnx.ModelProto, ctx: PassContext) -> list[str]:
        """The cache key of each pass prefix (each chained on the one before)."""
        context = {
            "target": [ctx.engine, ctx.device, ctx.precision],
            "shapes": {k: list(v) for k, v in ctx.shapes.items()},
            "calibration": None if ctx.calibration is None else ctx.calibration.digest,
            "host": cpu_class(),
        }
        key, keys = hashlib.sha256(model.SerializeToString()).hexdigest(), []
        for p in self.passes:
            key = stage_key(
                f"pass:{p.name}",
                key,
                {"config": pass_config(p), "context": context, "versions": pass_versions([p.name])},
            )
            keys.append(key)
        return keys

    def _store(self, key: str, model: onnx.ModelProto, records: list[PassRecord]) -> None:
        assert self.cache is not None
        if model.ByteSize() >= 2**31 - 1:
            return  # external data: not worth the copy
        with tempfile.TemporaryDirectory(prefix="duh-stage-") as tmp:
            Path(tmp, "model.onnx").write_bytes(model.SerializeToString())
            payload = {"records": [r.to_json() for r in records]}
            self.cache.store(key, "pass", records[-1].name, Path(tmp), payload)

    def _run_from(
        self,
        start: int,
        model: onnx.ModelProto,
        ctx: PassContext,
        records: list[PassRecord],
        keys: Sequence[str],
    ) -> tuple[onnx.ModelProto, list[PassRecord]]:
        for index in range(start, len(self.passes)):
            model, record = self._run_pass(self.passes[index], model, ctx)
            records.append(record)
            if keys:
                self._store(keys[index], model, records)
        return model, records

    def _run_pass(
        self, p: Pass, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, PassRecord]:
        before = node_count(model)
        start = time.perf_counter()
        log.info("pass %s", p.name)
        try:
            result = p.run(model, ctx)
        except DuhError:
            raise
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise PassError(f"pass {p.name!r} failed on this model: {exc}") from exc
        seconds = time.perf_counter() - start
        if result.changed and result.model.ByteSize() < 2**31 - 1:
            try:
                onnx.checker.check_model(result.model)
            except onnx.checker.ValidationError as exc:
                raise PassError(
                    f"pass {p.name!r} produced an invalid model ({str(exc).splitlines()[0]}); "
                    f"leave it out with --passes"
                ) from exc
        model = result.model
        record = PassRecord(
            p.name, pass_config(p), seconds, before, node_count(model), result.changed,
            result.notes,
        )  # fmt: skip
        log.info("pass %s: %d -> %d nodes in %.2fs", p.name, before, node_count(model), seconds)
        return model, record
