"""INT8 from Intel Neural Compressor (PyTorch side, before export) vs duh's own (ONNX side).

One model (a small CNN trained on scikit-learn's digits), one calibration set, one held-out
set, one engine (ONNX Runtime, so the quantizer is what differs): FP32, duh's static INT8
(``--target onnxruntime:cpu-int8``) and INC's PT2E static INT8 (``--quantizer inc``). Reports
each build's time, held-out accuracy, top-1 agreement with torch, and the median latency of
batch-1 and batch-64 runs measured interleaved in one run, with the ratio to FP32.

    flock /tmp/duh-bench.lock .venv/bin/python -m benchmarks.inc_vs_duh [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

MODEL = """
import pathlib

import torch


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 2 * 2, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(image)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def make():
    model = DigitsCNN()
    weights = pathlib.Path(__file__).with_name("weights.pt")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), (torch.zeros(2, 1, 8, 8),)
"""


def _train(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import importlib.util

    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    torch.set_num_threads(1)
    (folder / "model.py").write_text(textwrap.dedent(MODEL))
    spec = importlib.util.spec_from_file_location("bench_model", folder / "model.py")
    assert spec is not None and spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    x = (digits.images[order] / 16.0).astype(np.float32)[:, None]
    y = digits.target[order].astype(np.int64)
    model = code.DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        idx = torch.from_numpy(rng.integers(0, 1300, 64))
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.save(model.state_dict(), folder / "weights.pt")
    np.savez(folder / "calib.npz", image=x[:256])
    np.savez(folder / "check.npz", image=x[1300:1364])
    with torch.no_grad():
        logits = model(torch.from_numpy(x[1300:])).numpy()
    return x[1300:], y[1300:], logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 5
    import duh

    with tempfile.TemporaryDirectory(prefix="duh-inc-bench-") as name:
        folder = Path(name)
        x_test, y_test, torch_logits = _train(folder)
        source = f"{folder / 'model.py'}:make"
        common = {"trust_code": True, "dynamic": {"image": (0,)}, "cache": False,
                  "check_data": folder / "check.npz"}  # fmt: skip
        builds = {
            "fp32": dict(target="onnxruntime:cpu"),
            "duh int8": dict(target="onnxruntime:cpu-int8", calib=folder / "calib.npz"),
            "inc int8": dict(
                target="onnxruntime:cpu-int8", calib=folder / "calib.npz", quantizer="inc"
            ),
        }
        rows: dict[str, dict[str, float]] = {}
        sessions = {}
        for label, options in builds.items():
            started = time.perf_counter()
            duh.build(source, output=folder / f"{label.replace(' ', '-')}.duh", **common, **options)
            seconds = time.perf_counter() - started
            session = duh.load(folder / f"{label.replace(' ', '-')}.duh")
            logits = session.run({"image": x_test})["output"]
            rows[label] = {
                "build_s": round(seconds, 2),
                "accuracy": float(np.mean(logits.argmax(-1) == y_test)),
                "top1_vs_torch": float(np.mean(logits.argmax(-1) == torch_logits.argmax(-1))),
            }
            sessions[label] = session
        for batch in (1, 64):
            feed = {"image": x_test[:batch]}
            times: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(args.rounds):  # interleaved: load from elsewhere hits every one alike
                for label, session in sessions.items():
                    started = time.perf_counter()
                    for _ in range(20):
                        session.run(feed)
                    times[label].append((time.perf_counter() - started) / 20 * 1e3)
            base = statistics.median(times["fp32"])
            for label, values in times.items():
                rows[label][f"b{batch}_median_ms"] = round(statistics.median(values), 4)
                rows[label][f"b{batch}_vs_fp32"] = round(statistics.median(values) / base, 3)
        for session in sessions.values():
            session.close()
    report = {
        "torch_accuracy": float(np.mean(torch_logits.argmax(-1) == y_test)),
        "builds": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
