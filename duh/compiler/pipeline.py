"""The PassManager: runs a configured list of passes and records what each did."""

from __future__ import annotations

import json
import logging
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

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
        }


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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {str(path)!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path.name} is not valid TOML: {exc}") from None
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
    """Runs passes in order; checks the model after each, so a broken pass is caught at once."""

    def __init__(self, specs: Sequence[PassSpec]) -> None:
        self.passes: list[Pass] = [create_pass(s.name, s.config) for s in specs]

    def describe(self) -> list[dict[str, object]]:
        """Each pass's name and config, as ``--dry-run`` prints them."""
        return [{"name": p.name, "config": pass_config(p)} for p in self.passes]

    def run(
        self, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, list[PassRecord]]:
        """Run every pass; return the final model and a record per pass."""
        records = []
        for p in self.passes:
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
            records.append(
                PassRecord(
                    p.name,
                    pass_config(p),
                    seconds,
                    before,
                    node_count(model),
                    result.changed,
                    result.notes,
                )
            )
            log.info("pass %s: %d -> %d nodes in %.2fs", p.name, before, node_count(model), seconds)
        return model, records
