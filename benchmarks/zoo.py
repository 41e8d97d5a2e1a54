"""The zoo: every real trained model of ``fixtures/zoo_data.py`` built for every CPU target.

Each case runs ``duh build MODEL --target T`` through the CLI (``--calib NAME.calib.npz`` for
INT8; ``--check-data NAME.check.npz`` where the CLI has it), loads the artifact with ``duh.load``
and runs it on the model's check data against ONNX Runtime running the source. A case ends:

- ``pass``: built, and every output within the target precision's criteria;
- ``mismatch``: built, but an output is off (the worst one is named);
- ``refused``: duh said no, in one line with an exit code from the README's table (the line is
  the reason);
- ``crash``: a Python traceback, an exit code outside the table, or an artifact that fails to run.

    python -m benchmarks.zoo [--targets cpu,openvino:cpu-fp32] [--models a,b] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.zoo_data import ZOO_MODELS, data_path, feeds, zoo_model_path  # noqa: E402

TARGETS = ("cpu", "openvino:cpu-fp32", "cpu-bf16", "cpu-int8")
EXIT_CODES = range(1, 10)  # README, "Errors and exit codes": 1-9 are DuhError subclasses
# duh's default criteria per precision (duh/compiler/verify.py): (atol, rtol, min cosine)
CRITERIA = {"fp32": (1e-4, 1e-3, 0.9999), "bf16": (5e-2, 8e-2, 0.99), "int8": (None, None, 0.98)}
MIN_TOP1 = 0.95  # INT8 (and label outputs of reduced precisions): agreement with the source


@dataclass(frozen=True, slots=True)
class Case:
    """One model built for one target, and how it ended."""

    model: str
    target: str
    status: str  # pass | mismatch | refused | crash
    detail: str
    seconds: float
    exit_code: int


def precision_of(target: str) -> str:
    """The criteria a target's artifact is held to."""
    if target.endswith("int8"):
        return "int8"
    if target.endswith(("bf16", "fp16")):
        return "bf16"
    return "fp32"


def source_is_quantized(model: Path) -> bool:
    """Whether the source already computes in integers (its engines may differ by int8 steps)."""
    import onnx

    ops = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}
    graph = onnx.load(str(model), load_external_data=False).graph
    return any(n.op_type in ops or n.op_type.startswith("DynamicQuantize") for n in graph.node)


def _array(value: Any) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):  # sequence<map> output
        return np.asarray([[row[k] for k in sorted(row)] for row in value], np.float32)
    return np.asarray(value)


def compare(refs: list[np.ndarray], gots: list[np.ndarray], precision: str) -> str | None:
    """Why ``gots`` is off from ``refs`` by ``precision``'s criteria, or None when within them."""
    ref, got = np.concatenate([r.ravel() for r in refs]), np.concatenate([g.ravel() for g in gots])
    if ref.shape != got.shape:
        return f"shape {got.shape} where the source gives {ref.shape}"
    if ref.dtype.kind not in "fc":  # labels, indices: exact in fp32, mostly equal otherwise
        agree = float(np.mean(ref == got)) if ref.size else 1.0
        want = 1.0 if precision == "fp32" else MIN_TOP1
        return None if agree >= want else f"{agree:.3f} of values equal (< {want})"
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    if not np.all(np.isfinite(got64) == np.isfinite(ref64)):
        return "non-finite values where the source has finite ones"
    finite = np.isfinite(ref64)
    ref64, got64 = ref64[finite], got64[finite]
    diff = float(np.max(np.abs(ref64 - got64))) if ref64.size else 0.0
    scale = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    denom = float(np.linalg.norm(ref64) * np.linalg.norm(got64))
    cosine = float(np.dot(ref64, got64) / denom) if denom > 0 else (1.0 if diff == 0 else 0.0)
    atol, rtol, min_cos = CRITERIA[precision]
    reasons = []
    if atol is not None and rtol is not None and diff > atol + rtol * scale:
        reasons.append(f"max abs diff {diff:.3g} > {atol:g} + {rtol:g} x {scale:.3g}")
    if cosine < min_cos:
        reasons.append(f"cosine {cosine:.5f} < {min_cos}")
    if precision == "int8" and refs[0].ndim == 2 and refs[0].shape[-1] > 1:
        top1 = float(
            np.mean([np.argmax(r, -1) == np.argmax(g, -1) for r, g in zip(refs, gots, strict=True)])
        )
        if top1 < MIN_TOP1:
            reasons.append(f"top-1 agreement {top1:.3f} < {MIN_TOP1}")
    return "; ".join(reasons) or None


def _reference(model: Path, runs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [
        dict(zip(names, (_unzip(v) for v in session.run(None, feed)), strict=True)) for feed in runs
    ]


def _unzip(value: object) -> np.ndarray:
    """ZipMap's output (a list of {label: probability}, one per row) as the [N, C] matrix duh
    serves in its place (columns in label order, as the manifest's source.output_labels)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        labels = list(value[0])
        return np.array([[row[k] for k in labels] for row in value], np.float32)
    return _array(value)


def _cli_has(option: str) -> bool:
    from typer.testing import CliRunner

    from duh.cli import app

    return option in CliRunner().invoke(app, ["build", "--help"], terminal_width=200).stdout


def build_args(name: str, target: str, out: Path, check_data: bool) -> list[str]:
    """The ``duh build`` arguments of one zoo case."""
    args = ["build", str(zoo_model_path(name)), "--target", target, "-o", str(out)]
    if precision_of(target) == "int8":
        args += ["--calib", str(data_path(name, "calib"))]
    if check_data:
        args += ["--check-data", str(data_path(name, "check"))]
    return args


def run_case(name: str, target: str, workdir: Path, check_data: bool | None = None) -> Case:
    """Build zoo model ``name`` for ``target`` and check the artifact on the model's check data."""
    from typer.testing import CliRunner

    import duh
    from duh.cli import app

    if check_data is None:
        check_data = _cli_has("--check-data")
    out = workdir / f"{name}.{target.replace(':', '_')}.duh"
    start = time.perf_counter()
    result = CliRunner().invoke(app, build_args(name, target, out, check_data))
    seconds = time.perf_counter() - start
    code, text = result.exit_code, (result.stderr or "") + (result.stdout or "")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = result.exception
        return Case(name, target, "crash", f"{type(error).__name__}: {error}"[:300], seconds, code)
    if code != 0:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        status = "refused" if code in EXIT_CODES and "Traceback" not in text else "crash"
        return Case(
            name, target, status, (lines[-1] if lines else "(no message)")[:300], seconds, code
        )
    runs = feeds(name, "check")
    refs = _reference(zoo_model_path(name), runs)
    precision = precision_of(target)
    if precision == "fp32" and source_is_quantized(zoo_model_path(name)):
        precision = "int8"  # the source's own precision: engines' integer kernels differ a step
    try:
        session = duh.load(out)
        gots = [session.run(feed) for feed in runs]
    except duh.DuhError as error:
        return Case(name, target, "crash", f"built but does not run: {error}"[:300], seconds, code)
    worst = []
    for output in refs[0]:
        why = compare([r[output] for r in refs], [_array(g[output]) for g in gots], precision)
        if why:
            worst.append(f"{output}: {why}")
    if worst:
        return Case(name, target, "mismatch", "; ".join(worst)[:300], seconds, code)
    return Case(
        name, target, "pass", f"{len(runs)} runs within {precision} criteria", seconds, code
    )


def _table(cases: list[Case], targets: list[str]) -> str:
    by = {(c.model, c.target): c for c in cases}
    models = sorted({c.model for c in cases}, key=list(ZOO_MODELS).index)
    width = max(len(m) for m in models)
    lines = [" ".join([f"{'model':<{width}}", *(f"{t:<18}" for t in targets)])]
    for m in models:
        cells = [
            f"{by[m, t].status + f' {by[m, t].seconds:.0f}s':<18}" for t in targets if (m, t) in by
        ]
        lines.append(" ".join([f"{m:<{width}}", *cells]))
    totals = {t: sum(by[m, t].status == "pass" for m in models if (m, t) in by) for t in targets}
    lines.append(
        " ".join([f"{'pass':<{width}}", *(f"{totals[t]}/{len(models):<15}" for t in targets)])
    )
    lines.append("")
    lines += [f"{c.model} {c.target}: {c.status}: {c.detail}" for c in cases if c.status != "pass"]
    return "\n".join(lines)


def main() -> int:
    """Run the zoo; print the table and the reasons, write JSON; exit 1 on any crash."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--models", default=",".join(ZOO_MODELS))
    parser.add_argument("--json", type=Path, help="write the cases as JSON here")
    parser.add_argument("--quick", action="store_true", help="the cpu target only")
    parser.add_argument("--workdir", type=Path, help="keep the artifacts here")
    args = parser.parse_args()
    targets = ["cpu"] if args.quick else args.targets.split(",")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        check_data = _cli_has("--check-data")
        for name in args.models.split(","):
            for target in targets:
                case = run_case(name, target, workdir, check_data)
                print(
                    f"{name:<20} {target:<18} {case.status:<9} {case.seconds:6.1f}s {case.detail}",
                    flush=True,
                )
                cases.append(case)
    print()
    print(_table(cases, targets))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        models = {
            n: {"producer": z.producer, "task": z.task, "features": list(z.features)}
            for n, z in ZOO_MODELS.items()
        }
        args.json.write_text(
            json.dumps(
                {"check_data": check_data, "models": models, "cases": [asdict(c) for c in cases]},
                indent=2,
            )
        )
    return 1 if any(c.status == "crash" for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
