"""The PassManager: runs a configured list of passes and records what each did."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from duh.errors import DuhError, PassError
from duh.passes import Pass, PassContext, create_pass, pass_config
from duh.passes._graph import node_count
from duh.targets import PassSpec

__all__ = ["PassManager", "PassRecord", "parse_pass_list"]

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
