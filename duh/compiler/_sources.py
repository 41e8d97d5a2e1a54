"""Sources that are not ONNX: a front end exports them, and the build keeps a way back.

The exported model is ingested like any ONNX file (checked, shape-inferred), but the source it
names is the user's file: its path, and the sha256 of its bytes (of every file, for a
directory such as a SavedModel). The front end's reference (the framework itself) gives the
outputs every candidate is also checked against.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from duh.calibration import CalibrationSet
from duh.compiler._cache_keys import source_file_digest
from duh.compiler._request import Candidate
from duh.compiler.ingest import SourceModel, ingest
from duh.errors import ConfigError, ModelError
from duh.frontends import Exported, FrontendOptions, QuantizeRequest, export, find

__all__ = [
    "checks_section",
    "framework_outputs",
    "frontend_options",
    "is_frontend_source",
    "quantize_source",
    "read_source",
    "record",
]

# --quantizer NAME[:RECIPE]: the framework-side quantizers (run before export).
QUANTIZERS = ("inc",)


def is_frontend_source(model: str | Path) -> bool:
    """Whether a front end (not duh's ONNX reader) reads ``model``."""
    return find(str(model)) is not None


def _source_path(model: str | Path) -> Path:
    """The file a source names (``module.py`` of ``module.py:factory``)."""
    text = str(model)
    head, sep, tail = text.rpartition(":")
    return Path(head) if sep and head.endswith(".py") and tail.isidentifier() else Path(text)


def _ingest_exported(
    exported: Exported, model: str | Path, shapes: Mapping[str, tuple[int, ...]]
) -> SourceModel:
    path = _source_path(model)
    with tempfile.TemporaryDirectory(prefix="duh-export-") as tmp:
        onnx_path = Path(tmp) / f"{path.stem or 'model'}.onnx"
        import onnx

        onnx.save(exported.model, str(onnx_path))
        source = ingest(onnx_path, shapes)
    return replace(source, path=path, sha256=source_file_digest(path))


def read_source(
    model: str | Path, shapes: Mapping[str, tuple[int, ...]], options: FrontendOptions
) -> tuple[SourceModel, Exported | None]:
    """The source model and, for a front end's source, its export (None for ONNX)."""
    if find(str(model)) is None:
        return ingest(model, shapes), None
    exported = export(str(model), options)
    return _ingest_exported(exported, model, shapes), exported


def quantize_source(
    model: str | Path,
    source: SourceModel,
    exported: Exported | None,
    quantizer: str,
    calibration: CalibrationSet | None,
    shapes: Mapping[str, tuple[int, ...]],
    max_drop: float | None = None,
) -> tuple[SourceModel, Exported]:
    """The source quantized by a framework-side quantizer (``inc`` or ``inc:RECIPE``)."""
    name, _, recipe = quantizer.partition(":")
    if name not in QUANTIZERS:
        raise ConfigError(
            f"--quantizer {quantizer!r} is unknown; the quantizers are {', '.join(QUANTIZERS)} "
            "(inc:static, inc:rtn, inc:smoothquant)"
        )
    if exported is None or exported.quantize is None:
        raise ConfigError(
            f"--quantizer {name} quantizes PyTorch models before their export; "
            f"{source.path.name} is not one: leave --quantizer out (duh quantizes ONNX itself)"
        )
    if calibration is None:
        raise ConfigError(f"--quantizer {name} needs calibration data: --calib PATH")
    # INC's autotune judges its candidates on held-out samples (else calibration ones).
    judged = tuple(calibration.check) or tuple(calibration.feeds[:64])
    request = QuantizeRequest(calibration.feeds, recipe or "static", max_drop, judged)
    quantized = exported.quantize(request)
    return _ingest_exported(quantized, model, shapes), quantized


def framework_outputs(
    exported: Exported | None, feeds: Sequence[Mapping[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], ...] | None:
    """The original framework's outputs on ``feeds`` (None without a reference)."""
    if exported is None or exported.reference is None:
        return None
    out = []
    for feed in feeds:
        try:
            got = exported.reference(feed)
        except (RuntimeError, ValueError, TypeError) as exc:
            text = str(exc).strip().splitlines()
            raise ModelError(
                f"the original model fails on the check inputs ({text[0] if text else exc!r}); "
                "give inputs it takes with --check-data, or build with --no-verify"
            ) from None
        out.append({k: np.asarray(v) for k, v in got.items()})
    return tuple(out)


def record(exported: Exported | None) -> dict[str, Any] | None:
    """The manifest's ``source.frontend``: front end, version and export settings."""
    return None if exported is None else dict(exported.record)


def frontend_options(
    shapes: Mapping[str, tuple[int, ...]],
    target_options: Mapping[str, str] | None,
    trust_code: bool,
    dynamic: Mapping[str, tuple[int, ...]] | None,
) -> FrontendOptions:
    """What a front end is told: --trust-code, --dynamic, and --shape sizes and ranges."""
    ranges = {}
    for key, value in (target_options or {}).items():
        if key.startswith("profile."):
            low, opt, high = (tuple(int(d) for d in p.split("x")) for p in value.split(":"))
            ranges[key.removeprefix("profile.")] = (low, opt, high)
    return FrontendOptions(
        trust_code=trust_code, shapes=dict(shapes), shape_ranges=ranges, dynamic=dict(dynamic or {})
    )


def checks_section(chosen: Candidate) -> dict[str, Any]:
    """The manifest's ``checks``: against the ONNX source and, for a front end's, the framework."""
    if chosen.report is None:
        return {"passed": None, "skipped": True}
    checks = chosen.report.to_json()
    if chosen.framework_report is not None:
        checks["framework"] = chosen.framework_report.to_json()
        checks["passed"] = bool(checks["passed"]) and chosen.framework_report.passed
    return checks
