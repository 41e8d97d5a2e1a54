"""INT8's top-1 agreement is applied to class scores, not to a normalized embedding's features
or to a few scores of their own (a regression head's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.compiler.verify import compare_outputs, tolerance_for


def _encoder(path: Path, weight: np.ndarray, normalize: bool, head: str = "") -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if not (normalize or head) else "h"])]
    if normalize:
        nodes.append(helper.make_node("LpNormalization", ["h"], ["y"], axis=-1, p=2))
    elif head == "Softmax":
        nodes.append(helper.make_node("Softmax", ["h"], ["y"], axis=-1))
    elif head == "scores":  # three scores near 3.0, as a speech-quality model's MOS head
        nodes.append(helper.make_node("Add", ["h", "three"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(3.0), "three")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def _report(
    tmp_path: Path, normalize: bool, head: str = "", width: int = 64, noise: float = 0.08
) -> tuple[object, float]:
    rng = np.random.default_rng(0)
    scale = 0.02 if head == "scores" else 1.0  # scores that differ by tenths
    weight = rng.normal(0, scale, (32, width)).astype(np.float32)
    noisy = weight + rng.normal(0, noise * scale, weight.shape).astype(np.float32)
    _encoder(tmp_path / "ref.onnx", weight, normalize, head)
    _encoder(tmp_path / "got.onnx", noisy, normalize, head)
    feeds = [{"x": rng.normal(0, 1, (1, 32)).astype(np.float32)} for _ in range(40)]
    ref, got = duh.load(tmp_path / "ref.onnx"), duh.load(tmp_path / "got.onnx")
    expected = [ref.run(f) for f in feeds]
    agree = np.mean(
        [
            np.argmax(e["y"]) == np.argmax(got.run(f)["y"])
            for e, f in zip(expected, feeds, strict=True)
        ]
    )
    report = compare_outputs(expected, got, feeds, "int8", tolerance_for("int8"), "test feeds")
    return report, float(agree)


def test_a_normalized_embedding_is_judged_by_cosine_not_argmax(tmp_path: Path) -> None:
    report, agree = _report(tmp_path, normalize=True)
    assert agree < 0.95  # argmax over features flips: top-1 would fail the artifact
    out = report.outputs[0]  # type: ignore[attr-defined]
    assert out.top1 is None and out.cosine > 0.99 and report.passed  # type: ignore[attr-defined]


def test_class_scores_are_still_held_to_top1(tmp_path: Path) -> None:
    report, agree = _report(tmp_path, normalize=False)
    assert agree < 0.95
    assert report.outputs[0].top1 is not None and not report.passed  # type: ignore[attr-defined]


def test_a_few_scores_of_their_own_are_judged_by_cosine_not_argmax(tmp_path: Path) -> None:
    report, agree = _report(tmp_path, normalize=False, head="scores", width=3, noise=0.5)
    assert agree < 0.95  # which of three close scores is largest flips
    out = report.outputs[0]  # type: ignore[attr-defined]
    assert out.top1 is None and out.cosine > 0.99 and report.passed  # type: ignore[attr-defined]


def test_three_class_probabilities_are_still_held_to_top1(tmp_path: Path) -> None:
    report, agree = _report(tmp_path, normalize=False, head="Softmax", width=3, noise=0.5)
    assert agree < 0.95
    assert report.outputs[0].top1 is not None and not report.passed  # type: ignore[attr-defined]


def _check(name: str, refs: list[np.ndarray], gots: list[np.ndarray]) -> object:
    from duh.compiler.verify import _check_output

    return _check_output(name, refs, gots, tolerance_for("int8"))


def test_names_say_which_outputs_hold_classes_and_which_features() -> None:
    rng = np.random.default_rng(0)
    # Rows whose argmax an engine's tiny errors flip half the time, cosine ~1: two near-ties.
    ref = rng.standard_normal((64, 16, 4)).astype(np.float32)
    ref[..., 1] = ref[..., 0] + 1e-3
    got = ref.copy()
    got[::2, :, 1] -= 2e-3  # half the rows now pick column 0
    for name in ("logits", "probs_out", "mlm_cls", "class_scores"):  # 3-D, 4 classes
        check = _check(name, [ref], [got])
        assert check.top1 is not None and not check.passed, name
    two_d = [ref[:, 0, :].repeat(4, axis=1)], [got[:, 0, :].repeat(4, axis=1)]  # [64, 16]
    assert _check("output_0", *two_d).top1 is not None  # unnamed [N, >=10]: classes, as before
    for name in ("z", "embedding", "last_hidden_state", "fingerprint", "hidden_out"):
        check = _check(name, *two_d)
        assert check.top1 is None and check.passed, name  # features: judged by cosine
