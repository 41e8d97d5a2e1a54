"""What a build writes down: the artifact's manifest, and the real inputs it saw."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from duh._version import __version__
from duh.calibration import CalibrationSet
from duh.compiler._artifact_cache import cache_section
from duh.compiler._feeds import CheckFeeds
from duh.compiler._request import BuildRequest, Selection
from duh.compiler._sources import checks_section
from duh.runtime import FORMAT_VERSION, Manifest, hash_files

__all__ = ["build_manifest", "reference_sources"]


def reference_sources(
    calibration: CalibrationSet | None, checks: CheckFeeds, check_data: str | Path | None
) -> list[tuple[str, Sequence[Mapping[str, Any]], bool]]:
    """The real inputs a build saw, for the artifact's reference statistics (drift)."""
    out: list[tuple[str, Sequence[Mapping[str, Any]], bool]] = []
    if calibration is not None:
        feeds = (*calibration.feeds, *calibration.check)
        out.append((calibration.source, feeds, calibration.synthetic))
    if check_data is not None:
        out.append((checks.source, checks.feeds, checks.synthetic))
    return out


def build_manifest(
    request: BuildRequest,
    selection: Selection,
    stage: Path,
    warnings: Sequence[str],
    seconds: float,
) -> Manifest:
    """The manifest of the chosen candidate's artifact in ``stage``."""
    chosen, source, host, calibration = (
        selection.chosen,
        request.source,
        request.host,
        request.calibration,
    )
    spec, compiled = chosen.spec, chosen.compiled
    assert compiled is not None
    calib_info: dict[str, Any] | None = None
    if calibration is not None:
        calib_info = {
            "source": calibration.source,
            "sha256": calibration.digest,
            "samples": len(calibration.feeds),
            "held_out": len(calibration.check),
            "synthetic": calibration.synthetic,
        }
    return Manifest(
        format_version=FORMAT_VERSION,
        duh_version=__version__,
        engine=spec.engine,
        engine_version=compiled.engine_version,
        target={
            "requested": request.requested,
            "resolved": spec.name,
            "engine": spec.engine,
            "device": spec.device,
            "precision": spec.precision,
        },
        inputs=source.inputs,
        outputs=source.outputs,
        files=hash_files(stage),
        engine_config=dict(compiled.engine_config),
        host_requirements=dict(compiled.host_requirements),
        source={
            "file": source.path.name,
            "sha256": source.sha256,
            "opset": source.opset,
            "ir_version": source.ir_version,
            "producer": f"{source.model.producer_name} {source.model.producer_version}".strip(),
            "external_data": list(source.external_data),
            "quantized": list(request.quantized_source),
            "float16": request.float16_source,
            "output_labels": {u.name: u.to_json() for u in source.unzipped},
            **({"frontend": dict(request.frontend)} if request.frontend is not None else {}),
        },
        passes=tuple(r.to_json() for r in chosen.records),
        checks=checks_section(chosen),
        selection={
            "method": selection.method,
            "chosen": spec.name,
            "reason": selection.reason,
            "not_tried": list(selection.not_tried),
            "candidates": [c.to_json() for c in selection.candidates],
        },
        build={
            "seconds": round(seconds, 3),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host": {"cpu": host.cpu_model, "cores": host.cores, "cpu_flags": host.notable_flags},
            "calibration": calib_info,
            "compile_notes": list(compiled.notes),
            "cache": cache_section(request.cache, "miss"),
            **({"accuracy": dict(chosen.accuracy)} if chosen.accuracy is not None else {}),
        },
        warnings=tuple(warnings),
    )
