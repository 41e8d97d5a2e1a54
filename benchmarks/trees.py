"""Tree ensembles: the ``lower-ml`` GEMM form on OpenVINO vs ONNX Runtime's native TreeEnsemble.

``python -m benchmarks.trees [--json FILE] [--rounds N]``

Trains scikit-learn forests (breast cancer; a RandomForest, a GradientBoosting), converts them
with skl2onnx, builds ``openvino:cpu-fp32`` (which lowers the trees) and ``onnxruntime:cpu-fp32``
(the native operator) with duh, and times both through ``duh.load`` on the same rows, interleaved
in one run, at batch 1 and batch 256. Reports medians (ms) and the ratio OpenVINO / ORT, and
checks top-1 agreement of the two artifacts on every held-out row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx


def _models() -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    return {
        "random_forest_100x8": RandomForestClassifier(100, max_depth=8, random_state=0),
        "gradient_boosting_100x3": GradientBoostingClassifier(n_estimators=100, random_state=0),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print a table (and write JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer

    import duh
    from duh.runtime import measure_interleaved

    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, est in _models().items():
            est.fit(x[::2], y[::2])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = to_onnx(est, x[:1], options={id(est): {"zipmap": False}},
                                target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, str(path))
            sessions = {}
            for target in ("onnxruntime:cpu-fp32", "openvino:cpu-fp32"):
                out = Path(tmp) / f"{name}.{target.replace(':', '_')}.duh"
                duh.build(path, target, out, cache=False)
                sessions[target] = duh.load(out)
            held = x[1::2]
            labels = [s.run({"X": held})["label"] for s in sessions.values()]
            agree = float(np.mean(labels[0] == labels[1]))
            for batch in (1, 256):
                tiled = np.resize(held, (max(batch, 16), held.shape[1]))
                feeds = [{"X": tiled[i : i + batch]} for i in range(0, 16 if batch == 1 else 1)]
                calls = [lambda f, s=s: s.run(f) for s in sessions.values()]  # type: ignore[misc]
                t = measure_interleaved(calls, feeds, rounds=args.rounds, rotate=True)
                ort_ms, ov_ms = t.medians_ms
                rows.append({"model": name, "batch": batch, "ort_native_ms": round(ort_ms, 4),
                             "openvino_lowered_ms": round(ov_ms, 4),
                             "ratio": round(ov_ms / ort_ms, 2),
                             "top1_agreement": agree})
            for s in sessions.values():
                s.close()
    head = ("model", "batch", "ORT native ms", "OV lowered ms", "OV/ORT", "top-1")
    print(f"{head[0]:<26}" + "".join(f"{h:>15}" for h in head[1:]))
    for r in rows:
        cells = (r["batch"], r["ort_native_ms"], r["openvino_lowered_ms"], r["ratio"])
        print(f"{r['model']:<26}" + "".join(f"{c:>15}" for c in cells)
              + f"{r['top1_agreement']:>15.4f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
