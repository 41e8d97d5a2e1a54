"""Accuracy budgets: INT8 keeps the fewest most sensitive layers in float to meet --max-drop.

``outlier_cnn.onnx`` (fixtures/make_outlier_cnn.py) is a digits CNN with one channel 256 times
wider than the rest: its plain INT8 loses 3.9 points of top-1 on the 540 test digits, over a
0.5-point budget, on ONNX Runtime and OpenVINO alike.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.compiler import AccuracyBudget, build
from duh.errors import ConfigError, DuhError
from duh.runtime import load

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODEL = FIXTURES / "outlier_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"
TEST = FIXTURES / "digits_test.npz"
runner = CliRunner()


def _top1(artifact: Path) -> float:
    data = np.load(TEST)
    session = load(artifact)
    try:
        got = [
            int(np.argmax(session.run({"input": data["input"][i : i + 1]})["logits"]))
            for i in range(len(data["label"]))
        ]
    finally:
        session.close()
    return float(np.mean(np.asarray(got) == data["label"]))


def _fp32_top1() -> float:
    import onnxruntime as ort

    data = np.load(TEST)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data["input"]})[0]
    return float(np.mean(np.argmax(logits, axis=1) == data["label"]))


def _check_budget_met(section: dict, artifact: Path) -> None:
    fp32 = _fp32_top1()
    assert section["metric"] == "top1" and section["labels_used"]
    assert section["fp32"] == pytest.approx(fp32, abs=1e-6)
    assert section["int8_plain_drop"] > 0.005  # plain INT8 misses the budget
    assert section["drop"] <= 0.005
    kept = section["float_layers"]
    assert 1 <= len(kept) <= 0.2 * section["quantized_layers"]
    assert {r["node"] for r in section["sensitivity"] if r["float"]} == set(kept)
    # The artifact itself, run again through the runtime, is within the budget.
    assert fp32 - _top1(artifact) <= 0.005


def test_cli_budget_met_on_onnxruntime_with_few_layers_in_float(tmp_path: Path) -> None:
    out = tmp_path / "m.duh"
    result = runner.invoke(
        app,
        ["build", str(MODEL), "-t", "onnxruntime:cpu-int8", "--calib", str(CALIB),
         "--eval", str(TEST), "--labels", "label", "--metric", "top1", "--max-drop", "0.005",
         "--no-cache", "-o", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    section = manifest["build"]["accuracy"]
    _check_budget_met(section, out)
    assert {"conv2", "conv3"} <= set(section["float_layers"])  # the two around the outlier
    notes = next(p for p in manifest["passes"] if p["name"] == "quantize")["notes"]
    assert any("accuracy budget" in n and "conv2" in n for n in notes)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino missing")
def test_budget_met_on_openvino_with_few_layers_in_float(tmp_path: Path) -> None:
    budget = AccuracyBudget(TEST, "top1", 0.005, labels="label", report_layers=True)
    result = build(
        MODEL, "openvino:cpu-int8", tmp_path / "m.duh", calib=CALIB, accuracy=budget, cache=False
    )
    assert result.manifest is not None and result.output is not None
    _check_budget_met(dict(result.manifest.build["accuracy"]), result.output)


def test_all_float_that_misses_the_budget_fails_with_the_numbers(tmp_path: Path) -> None:
    # 90% of the weights pruned: even with no layer quantized the model misses a 0.5% budget.
    budget = AccuracyBudget(TEST, "top1", 0.005, labels="label")
    with pytest.raises(DuhError) as info:
        build(
            FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-int8", tmp_path / "m.duh",
            passes="simplify,prune,quantize", pass_options={"prune": {"sparsity": 0.9}},
            calib=CALIB, accuracy=budget, cache=False,
        )  # fmt: skip
    text = str(info.value)
    assert "\n" not in text
    assert "even with every layer" in text and "in float" in text
    assert "vs fp32 0.99" in text and "> 0.005" in text  # the metrics and the budget
    assert not (tmp_path / "m.duh").exists()


def test_bad_metric_spelling_is_one_config_error_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["build", str(MODEL), "-t", "onnxruntime:cpu-int8", "--calib", str(CALIB),
         "--eval", str(TEST), "--metric", "top-1", "-o", str(tmp_path / "m.duh")],
    )  # fmt: skip
    assert result.exit_code == ConfigError.exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'top-1'" in lines[0] and "top1, cosine, mse" in lines[0]
    with pytest.raises(ConfigError, match="--drop-type"):
        AccuracyBudget(TEST, "top1", 0.01, drop_type="percent")


def test_budget_flags_without_eval_data_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["build", str(MODEL), "-t", "onnxruntime:cpu-int8", "--calib", str(CALIB),
         "--max-drop", "0.01", "-o", str(tmp_path / "m.duh")],
    )  # fmt: skip
    assert result.exit_code == ConfigError.exit_code
    assert "--eval DATA" in result.stderr


def test_user_metric_needs_trust_code_and_runs_with_it(tmp_path: Path) -> None:
    metric = tmp_path / "mymetric.py"
    metric.write_text(
        "import numpy as np\n"
        "def accuracy(outputs, labels):\n"
        "    got = [int(np.argmax(o['logits'])) for o in outputs]\n"
        "    return float(np.mean(np.asarray(got) == labels))\n"
    )
    args = ["build", str(FIXTURES / "digits_cnn.onnx"), "-t", "onnxruntime:cpu-int8",
            "--calib", str(CALIB), "--eval", str(TEST), "--labels", "label",
            "--metric", f"{metric}:accuracy", "--max-drop", "0.01", "--no-cache",
            "-o", str(tmp_path / "m.duh")]  # fmt: skip
    refused = runner.invoke(app, args)
    assert refused.exit_code == ConfigError.exit_code
    assert "--trust-code" in refused.stderr
    done = runner.invoke(app, [*args, "--trust-code", "--report-layers"])
    assert done.exit_code == 0, done.stderr
    section = json.loads((tmp_path / "m.duh" / "manifest.json").read_text())["build"]["accuracy"]
    assert section["fp32"] == pytest.approx(0.9926, abs=1e-4)  # the fixture's test accuracy
    assert section["drop"] <= 0.01 and section["float_layers"] == []
    assert section["sensitivity"]  # --report-layers ranks them even when INT8 meets the budget
    assert "INT8 sensitivity" in done.stdout


def test_cosine_against_fp32_outputs_without_labels(tmp_path: Path) -> None:
    budget = AccuracyBudget(TEST, "cosine", 0.001)
    result = build(
        FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-int8", tmp_path / "m.duh",
        calib=CALIB, accuracy=budget, cache=False,
    )  # fmt: skip
    assert result.manifest is not None
    section = result.manifest.build["accuracy"]
    assert not section["labels_used"] and section["fp32"] == pytest.approx(1.0)
    assert 0.999 <= section["int8"] < 1.0 and section["drop"] == pytest.approx(1 - section["int8"])
    # A relative drop of an error that fp32 has none of is undefined: said in one line.
    with pytest.raises(ConfigError, match="relative drop of mse is undefined"):
        build(
            FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-int8", tmp_path / "n.duh",
            calib=CALIB, accuracy=AccuracyBudget(TEST, "mse", 0.1, drop_type="relative"),
            cache=False,
        )  # fmt: skip


def test_recipe_keys_make_the_budget(tmp_path: Path) -> None:
    from duh.recipe import build_kwargs, load_recipe_file

    recipe = tmp_path / "duh.toml"
    recipe.write_text(
        f"[models.cnn]\nmodel = '{MODEL}'\ntargets = ['onnxruntime:cpu-int8']\n"
        f"calib = '{CALIB}'\neval = '{TEST}'\nlabels = 'label'\nmetric = 'top1'\n"
        "max_drop = 0.005\ndrop_type = 'relative'\nplot = 'layers.png'\n"
    )
    kwargs = build_kwargs(load_recipe_file(recipe).builds[0])
    assert kwargs["accuracy"] == AccuracyBudget(
        TEST, "top1", 0.005, "relative", "label", report_layers=True
    )
    recipe.write_text(recipe.read_text().replace("'top1'", "'accuracy'"))
    with pytest.raises(ConfigError, match="--metric 'accuracy' is not a metric"):
        build_kwargs(load_recipe_file(recipe).builds[0])


@pytest.mark.parametrize("target", ["onnxruntime:cpu-int8", "openvino:cpu-int8"])
def test_budget_keeps_the_op_whose_error_a_later_op_amplifies(target: str, tmp_path: Path) -> None:
    """A log-mel front end: plain INT8 is far over the budget (on ONNX Runtime its Log reads
    zeros: -inf, scored as the worst cosine), and the filterbank in float meets it in one round
    while the transform before it stays INT8."""
    from tests.compiler.test_int8_fallback import _log_mel_model, _tones

    result = build(
        _log_mel_model(tmp_path / "log_mel.onnx"), target, tmp_path / "m.duh",
        calib=_tones(tmp_path / "calib.npz", 32, 1),
        accuracy=AccuracyBudget(_tones(tmp_path / "eval.npz", 16, 3), "cosine", 0.01), cache=False,
    )  # fmt: skip
    assert result.manifest is not None
    section = result.manifest.build["accuracy"]
    assert section["int8_plain_drop"] > 0.3 and section["drop"] <= 0.01
    assert "filterbank" in section["float_layers"] and "frame" not in section["float_layers"]
    assert len(section["rounds"]) == 1
    top = section["sensitivity"][0]  # on op outputs (ONNX Runtime) the power's pair goes too
    assert "filterbank" in top["float_with"] and top["gain"] > 0.3, top
