"""``compare``: run models and artifacts on the same data and hold each to the reference's outputs.

The reference is the first subject, or recorded golden outputs (``load_outputs``); every other
subject is compared with it, output by output, under the looser of the two subjects' tolerances
(set by precision, or recorded in an artifact's manifest) and any per-output overrides.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duh.calibration import load_calibration
from duh.compare._golden import Golden, read_golden, write_golden
from duh.compare._metrics import (
    EXACT,
    Tolerance,
    compare_output,
    default_tolerance,
    loosest,
    with_overrides,
)
from duh.compare._report import CompareReport, SubjectInfo, SubjectResult
from duh.errors import ConfigError, ModelError
from duh.runtime import Session, TensorSpec, load

__all__ = ["ALL_OUTPUTS", "MISMATCH_EXIT_CODE", "CompareRequest", "compare"]

log = logging.getLogger(__name__)

ALL_OUTPUTS = "*"
# The exit status of `duh compare` when a subject is out of tolerance (bench's gates take 10).
MISMATCH_EXIT_CODE = 11
_TOLERANCE_FIELDS = ("atol", "rtol", "min_cosine", "min_top1")
# No cap on the samples read when the request sets none.
_EVERY_SAMPLE = 1 << 40

Feed = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class CompareRequest:
    """What to compare, on which data, held to what."""

    subjects: tuple[Path, ...] = field(
        metadata={"help": ".onnx models or .duh artifacts; the first is the reference"}
    )
    data: Path = field(metadata={"help": "inputs, in --check-data's formats"})
    samples: int | None = field(default=None, metadata={"help": "at most this many samples"})
    preprocess: Any = field(
        default=None, metadata={"help": "image preprocessing (a PreprocessSpec, TOML path, text)"}
    )
    tolerances: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict,
        metadata={"help": "output name ('*' for every output) -> {atol, rtol, min_cosine, ...}"},
    )
    save_outputs: Path | None = field(
        default=None, metadata={"help": "record the first subject's outputs in this .npz"}
    )
    load_outputs: Path | None = field(
        default=None, metadata={"help": "compare every subject with the outputs recorded here"}
    )
    worst: int = field(default=5, metadata={"help": "worst elements kept per output"})
    threads: int | None = field(default=None, metadata={"help": "engine intra-op threads"})
    engine_options: Mapping[str, str] = field(
        default_factory=dict, metadata={"help": "engine settings, passed through"}
    )


def _open(path: Path, request: CompareRequest) -> tuple[Session, SubjectInfo]:
    if path.suffix == ".onnx" and not path.is_file():
        raise ModelError(f"model {str(path)!r} does not exist")
    if path.is_file() and path.suffix != ".onnx":
        raise ConfigError(
            f"{str(path)!r} is neither an .onnx model nor a .duh artifact directory; "
            "compare takes models and artifacts (data goes to --data)"
        )
    session = load(path, threads=request.threads, engine_options=request.engine_options)
    manifest = session.manifest
    if manifest is None:
        info = SubjectInfo(
            str(path), "model", session.engine_name, None, "fp32", default_tolerance("fp32")
        )
        return session, info
    precision = str(manifest.target.get("precision", "fp32"))
    recorded = manifest.checks.get("tolerance")
    # The tolerance the build verified this artifact with (lossy pipelines are held to INT8's).
    tolerance = Tolerance.from_json(recorded) if recorded else default_tolerance(precision)
    target = manifest.target.get("resolved")
    return session, SubjectInfo(
        str(path), "artifact", manifest.engine, target, precision, tolerance
    )


def _read(request: CompareRequest, inputs: Sequence[TensorSpec]) -> tuple[tuple[Feed, ...], str]:
    if str(request.data) == "synthetic":
        raise ConfigError(
            "--data needs real samples (a .npz, a .npy, a directory of .npy/.npz files or of "
            "images): a comparison on random inputs proves little"
        )
    data = load_calibration(
        request.data,
        inputs,
        samples=request.samples or _EVERY_SAMPLE,
        preprocess=request.preprocess,
        purpose="--data",
    )
    return data.feeds, data.source


def _digest(feeds: Sequence[Feed]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _run(session: Session, label: str, feeds: Sequence[Feed]) -> list[Feed]:
    log.info("running %s on %d feeds", label, len(feeds))
    names = [o.name for o in session.outputs]
    return [session.run(feed, names) for feed in feeds]


class _Feeds:
    """The data read once per input signature (an artifact may take other dtypes or shapes)."""

    def __init__(self, request: CompareRequest) -> None:
        self._request = request
        self._read: dict[tuple[TensorSpec, ...], tuple[tuple[Feed, ...], str]] = {}

    def get(self, inputs: Sequence[TensorSpec]) -> tuple[tuple[Feed, ...], str]:
        key = tuple(inputs)
        if key not in self._read:
            self._read[key] = _read(self._request, inputs)
        return self._read[key]


def _check_aligned(reference: Sequence[Feed], feeds: Sequence[Feed], label: str, ref: str) -> None:
    """Both sides must cut the data into the same feeds, or outputs cannot be paired."""
    shapes = [{n: a.shape for n, a in f.items()} for f in feeds]
    ref_shapes = [{n: a.shape for n, a in f.items()} for f in reference]
    if len(feeds) != len(reference) or any(
        s.keys() == r.keys() and s != r for s, r in zip(shapes, ref_shapes, strict=False)
    ):
        first = ", ".join(f"{n}{list(s)}" for n, s in (shapes[0] if shapes else {}).items())
        ref_first = ", ".join(
            f"{n}{list(s)}" for n, s in (ref_shapes[0] if ref_shapes else {}).items()
        )
        raise ConfigError(
            f"{label} reads --data as {len(feeds)} feeds ({first}), {ref} as {len(reference)} "
            f"({ref_first}); compare subjects whose inputs take the same batches"
        )


def _check_outputs(
    names: Sequence[str], session: Session, label: str, ref: str, golden: bool
) -> None:
    have = [o.name for o in session.outputs]
    missing = [n for n in names if n not in have]
    if missing:
        what = "the golden outputs" if golden else ref
        raise ConfigError(
            f"{label} has no output {', '.join(map(repr, missing))} that {what} hold "
            f"(its outputs: {', '.join(have)}; the reference's: {', '.join(names)}); "
            + (
                "record the golden outputs again"
                if golden
                else "compare models with the same outputs"
            )
        )


def _check_golden_shapes(
    expected: Sequence[Feed], got: Sequence[Feed], label: str, path: Path
) -> None:
    for k, (want, have) in enumerate(zip(expected, got, strict=True)):
        for name, array in want.items():
            if np.shape(array) != np.shape(have[name]):
                raise ConfigError(
                    f"--load-outputs {str(path)!r}: output {name!r} of feed {k} was recorded with "
                    f"shape {list(np.shape(array))}, {label} gives {list(np.shape(have[name]))}; "
                    "record the golden outputs again from a model with this signature"
                )


def _tolerance_for(
    name: str, reference: Sequence[Feed], pair: Tolerance, request: CompareRequest
) -> Tolerance:
    kind = np.asarray(reference[0][name]).dtype.kind if reference else "f"
    base = pair if kind in "fc" else EXACT
    merged = {**request.tolerances.get(ALL_OUTPUTS, {}), **request.tolerances.get(name, {})}
    return with_overrides(base, merged)


def _check_overrides(request: CompareRequest, names: Sequence[str]) -> None:
    for key, values in request.tolerances.items():
        if key != ALL_OUTPUTS and key not in names:
            raise ConfigError(
                f"tolerance for unknown output {key!r}; the outputs are {', '.join(names)} "
                f"(or '{ALL_OUTPUTS}' for all)"
            )
        unknown = sorted(set(values) - set(_TOLERANCE_FIELDS))
        if unknown:
            raise ConfigError(
                f"unknown tolerance field {', '.join(unknown)}; use {', '.join(_TOLERANCE_FIELDS)}"
            )


def _validate(request: CompareRequest) -> None:
    if request.save_outputs is not None and request.load_outputs is not None:
        raise ConfigError("give --save-outputs or --load-outputs, not both")
    needed = 1 if (request.save_outputs or request.load_outputs) else 2
    if len(request.subjects) < needed:
        raise ConfigError(
            "compare needs two models or artifacts (the first is the reference), or one with "
            "--load-outputs GOLDEN.npz or --save-outputs GOLDEN.npz"
        )
    if request.samples is not None and request.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {request.samples}")
    if request.worst < 0:
        raise ConfigError(f"--worst must be 0 or more, got {request.worst}")


def compare(request: CompareRequest) -> CompareReport:
    """Compare every subject with the reference (the first subject, or golden outputs).

    Returns a report whose ``passed`` says whether every output of every subject is within
    tolerance; a golden file is written (atomically) only when the whole comparison ran.
    Raises ``DuhError`` subclasses for subjects, data or golden files that do not fit.
    """
    _validate(request)
    data = _Feeds(request)
    golden: Golden | None = None
    if request.load_outputs is not None:
        golden = read_golden(request.load_outputs)
        reference = SubjectInfo.from_json(
            {**golden.subject, "label": str(request.load_outputs), "kind": "golden"},
            golden.tolerance,
        )
        ref_feeds, source = data.get(golden.inputs)
        digest = _digest(ref_feeds)
        if len(ref_feeds) != len(golden.outputs) or digest != golden.data.get("digest"):
            raise ConfigError(
                f"--load-outputs {str(request.load_outputs)!r} was recorded on other inputs "
                f"({golden.data.get('feeds')} feeds of {golden.data.get('source')}, sha256 "
                f"{str(golden.data.get('digest'))[:12]}…), --data gives {len(ref_feeds)} feeds "
                f"of {source} (sha256 {digest[:12]}…); pass the same --data and --samples"
            )
        names: Sequence[str] = golden.output_names
        expected: Sequence[Feed] = golden.outputs
        ref_inputs: Sequence[TensorSpec] = golden.inputs
        rest = request.subjects
    else:
        first, reference = _open(request.subjects[0], request)
        with first:
            ref_feeds, source = data.get(first.inputs)
            expected = _run(first, reference.label, ref_feeds)
            names = [o.name for o in first.outputs]
            ref_inputs = first.inputs
        rest = request.subjects[1:]
    _check_overrides(request, names)
    results = []
    for path in rest:
        session, info = _open(path, request)
        with session:
            feeds, _ = data.get(session.inputs)
            _check_aligned(ref_feeds, feeds, info.label, reference.label)
            _check_outputs(names, session, info.label, reference.label, golden is not None)
            got = _run(session, info.label, feeds)
        if golden is not None and request.load_outputs is not None:
            _check_golden_shapes(expected, got, info.label, request.load_outputs)
        pair = loosest(reference.tolerance, info.tolerance)
        outputs = tuple(
            compare_output(
                name,
                [np.asarray(e[name]) for e in expected],
                [g[name] for g in got],
                _tolerance_for(name, expected, pair, request),
                request.worst,
            )
            for name in names
        )
        results.append(SubjectResult(info, outputs))
    meta = {
        "path": str(request.data),
        "source": source,
        "feeds": len(ref_feeds),
        "digest": _digest(ref_feeds),
    }
    if request.save_outputs is not None:
        write_golden(
            request.save_outputs,
            Golden(
                reference.to_json(),
                reference.tolerance,
                meta,
                tuple(ref_inputs),
                tuple(names),
                tuple(expected),
            ),
        )
        log.info(
            "recorded %s's outputs on %d feeds in %s",
            reference.label,
            len(expected),
            request.save_outputs,
        )
    return CompareReport(reference, meta, tuple(results), request.save_outputs)
