"""Attention fusion on ONNX Runtime: all-MiniLM-L6-v2 (torch's sdpa export), plain ORT FP32 against
duh's ``onnxruntime:cpu`` (ORT FP32 on the fused graph: Attention, SkipLayerNormalization,
BiasGelu) and ``onnxruntime:cpu-int8`` (dynamic INT8 on the fused graph: QAttention), beside the
hand-made peers ORT ``quantize_dynamic`` on the unfused source and NNCF's static INT8 through its
ONNX backend (``nncf.quantize`` on the ModelProto, ``ModelType.TRANSFORMER``) run on ORT.

One interleaved run, batch 1, seq 128, 2 threads; medians, ratio vs ORT FP32, and the cosine of
the sentence embeddings (mean-pooled, normalized, in the graph) against FP32's on real sentences.

    HF_HUB_OFFLINE=1 flock /tmp/duh-bench.lock python -m benchmarks.ort_attention [--quick]
        [--workdir DIR] [--reuse] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.minilm_int8 import Run, _duh, _inputs, _ort, _ort_dynamic, _save, compare_and_time


def _nncf_onnx(source: Path, calib: list[dict[str, np.ndarray]], work: Path) -> Run:
    """NNCF's static INT8 on the ONNX model (its ONNX backend, transformer scheme), on ORT."""
    import nncf
    import onnx

    quantized = nncf.quantize(
        onnx.load(str(source)),
        nncf.Dataset(calib),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib),
    )
    path = work / "nncf-onnx-int8.onnx"
    onnx.save(quantized, str(path))
    return _ort(path)


def _ops(artifact: Path) -> str:
    import onnx

    model = onnx.load(str(artifact / "model.onnx"), load_external_data=False)
    fused = ("Attention", "QAttention", "SkipLayerNormalization", "EmbedLayerNormalization")
    counts = {op: sum(1 for n in model.graph.node if n.op_type == op) for op in fused}
    return ", ".join(f"{op} {n}" for op, n in counts.items() if n)


def main() -> int:
    """Build, measure interleaved, print the table (and optionally save it as JSON)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and eval inputs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep models and artifacts here")
    parser.add_argument("--reuse", action="store_true", help="time artifacts already built")
    parser.add_argument("--no-nncf", action="store_true", help="leave NNCF's ONNX INT8 out")
    args = parser.parse_args()
    import duh

    rounds = 15 if args.quick else 40
    with tempfile.TemporaryDirectory(prefix="duh-bench-attn-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source, feeds = _inputs("minilm", work, args.quick)
        calib, checks, evals = feeds[:64], feeds[64:72], feeds[72:]
        calib_path, check_path = _save(calib, work / "calib.npz"), _save(checks, work / "check.npz")
        subjects: dict[str, Run] = {"ORT FP32": _ort(source)}
        for target in ("onnxruntime:cpu", "onnxruntime:cpu-int8"):
            artifact = work / f"minilm.{target.replace(':', '.')}.duh"
            if not (args.reuse and artifact.is_dir()):
                print(f"building {target} ...", flush=True)
                duh.build(
                    source,
                    target,
                    artifact,
                    calib=calib_path if target.endswith("int8") else None,
                    check_data=check_path,
                    cache=False,
                )
            subjects[f"duh {target} ({_ops(artifact)})"] = _duh(artifact)
        print("ORT quantize_dynamic ...", flush=True)
        subjects["ORT quant_pre_process + quantize_dynamic"] = _ort_dynamic(source, work)
        if not args.no_nncf:
            print("NNCF INT8, ONNX backend ...", flush=True)
            subjects["NNCF static INT8 (ONNX backend) on ORT"] = _nncf_onnx(source, calib, work)
        rows = compare_and_time(subjects, evals, rounds)
        print("\n| subject | median ms | vs ORT FP32 | embedding cosine mean / min |")
        print("|---|---:|---:|---|")
        for r in rows:
            print(
                f"| {r['subject']} | {r['median_ms']:.2f} | {r['vs_ort_fp32']:.2f}x | "
                f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f} |"
            )
        print("\n(shared machine: ratios come from this one interleaved run)")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
