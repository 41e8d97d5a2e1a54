"""duh.bench on real engines: scenarios, baselines, profiles, memory and the errors users meet."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from duh.bench import HEADLINES, bench
from duh.errors import ArtifactError, ConfigError, InputError
from tests.bench.conftest import quick_settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_artifacts_and_a_plain_onnx_side_by_side(digits_ort: Path, digits_ov: Path) -> None:
    source = FIXTURES / "digits_cnn.onnx"
    report = bench([digits_ort, digits_ov, source],
                   quick_settings(scenarios=("single-stream", "offline", "multi-stream")))
    assert [s.name for s in report.subjects] == [digits_ort.name, digits_ov.name, source.name]
    assert [s.engine for s in report.subjects] == ["onnxruntime", "openvino", "onnxruntime"]
    assert report.subjects[2].kind == "onnx" and "plain ONNX" in report.subjects[2].target
    configs = {(m.scenario, m.config) for m in report.measurements}
    assert configs == {("single-stream", "batch 1"), ("offline", "batch 1"),
                       ("offline", "batch 4"), ("multi-stream", "streams 2 batch 1")}
    assert len(report.measurements) == 3 * len(configs)
    for m in report.measurements:
        lat = m.latency
        assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
        assert m.samples_per_s == pytest.approx(m.inferences_per_s * m.batch)
        assert 2 <= m.windows <= 3 and len(m.window_medians_ms) == m.windows
        headline, higher = HEADLINES[m.scenario]
        if m.subject == digits_ort.name:
            assert m.speedup == pytest.approx(1.0)
        else:
            base = next(b for b in report.measurements if b.subject == digits_ort.name
                        and (b.scenario, b.config) == (m.scenario, m.config))
            ratio = (m.metric(headline) / base.metric(headline) if higher
                     else base.metric(headline) / m.metric(headline))
            assert m.speedup == pytest.approx(ratio)


def test_the_figures_come_from_the_last_windows(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(min_windows=2, max_windows=2))
    [row] = report.measurements
    assert row.windows == 2
    assert row.latency.count == row.samples_ms.size
    assert np.median(row.samples_ms) == pytest.approx(row.latency.p50_ms)


def test_threads_and_engine_options_are_recorded(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(
        threads=1, engine_options={"session.intra_op.allow_spinning": "0"}))
    info = report.subjects[0]
    assert info.threads == 1 and info.options == {"session.intra_op.allow_spinning": "0"}
    assert report.settings["threads"] == 1


def test_real_data_feeds_the_run(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(
        scenarios=("offline",), batches=(2,), data=FIXTURES / "digits_test.npz"))
    [row] = report.measurements
    assert row.config == "batch 2" and row.batch == 2


def test_server_scenario_checks_the_latency_bound(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(
        scenarios=("server",), qps=(200.0,), latency_bound_ms=1e6))
    [row] = report.measurements
    assert row.config == "qps 200 batch 1" and row.bound_met is True
    assert row.offered_qps is not None and row.offered_qps > 0
    tight = bench([digits_ort], quick_settings(
        scenarios=("server",), qps=(200.0,), latency_bound_ms=1e-6))
    assert tight.measurements[0].bound_met is False


def test_find_peak_brackets_the_highest_rate_that_holds(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(
        scenarios=("server",), find_peak=True, latency_bound_ms=1e6))
    [peak] = report.peaks
    assert peak.trials and all(met for _, _, met in peak.trials)
    assert 0 < peak.peak_qps <= peak.capacity_qps * 1.05
    impossible = bench([digits_ort], quick_settings(
        scenarios=("server",), find_peak=True, latency_bound_ms=1e-6))
    assert impossible.peaks[0].peak_qps == 0
    assert not any(met for _, _, met in impossible.peaks[0].trials)
    assert any("no arrival rate held" in w for w in impossible.warnings)


def test_profiles_list_the_models_operators(digits_ort: Path, digits_ov: Path) -> None:
    report = bench([digits_ort, digits_ov], quick_settings(profile=True, profile_runs=20))
    ort, ov = report.profiles
    assert ort.engine == "onnxruntime" and ov.engine == "openvino"
    for prof in (ort, ov):
        assert prof.runs == 20 and prof.total_us_per_run > 0
        assert sum(o.share for o in prof.ops) == pytest.approx(1.0)
        assert [o.us_per_run for o in prof.ops] == sorted((o.us_per_run for o in prof.ops),
                                                          reverse=True)
        assert any("Conv" in t for t, _, _ in prof.by_type)
    # OpenVINO's counters are read after each run: every compute layer ran once per inference
    # (layout Reorders may be skipped on some runs).
    assert all(o.calls == 20 for o in ov.ops if o.op_type in ("Convolution", "FullyConnected"))
    assert all(o.calls <= 20 for o in ov.ops)


def test_peak_memory_is_measured_in_a_fresh_process(digits_ort: Path) -> None:
    report = bench([digits_ort], quick_settings(memory=True, min_windows=1, max_windows=1))
    peak = report.subjects[0].peak_rss_mb
    assert peak is not None and 10 < peak < 4096


def test_a_tampered_artifact_is_refused(digits_ort: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.duh"
    shutil.copytree(digits_ort, broken)
    with (broken / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="modified after the build"):
        bench([broken], quick_settings())


def test_builds_of_another_model_are_refused_naming_both_inputs(
    digits_ort: Path, dynamic_conv_model: Path
) -> None:
    # One workload feeds every subject: a model with other inputs is a separate bench.
    with pytest.raises(ConfigError) as info:
        bench([digits_ort, dynamic_conv_model], quick_settings())
    text = str(info.value)
    assert "conv.onnx takes inputs x, not the baseline" in text and "a command each" in text


def test_a_missing_artifact_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        bench([tmp_path / "nothing.duh"], quick_settings())


def test_a_shape_the_engine_rejects_names_the_subject_and_shape(dynamic_conv_model: Path) -> None:
    with pytest.raises(InputError) as info:
        bench([dynamic_conv_model], quick_settings(shapes=({"x": (1, 1, 2, 2)},)))
    text = str(info.value)
    assert "conv.onnx failed on x=1x1x2x2" in text and "check --shape" in text
    ok = bench([dynamic_conv_model], quick_settings(shapes=({"x": (1, 1, 5, 5)},
                                                            {"x": (1, 1, 9, 9)})))
    assert [m.config for m in ok.measurements] == ["x=1x1x5x5", "x=1x1x9x9", "mix"]


def test_fixed_batch_models_cannot_run_larger_offline_batches(fixed_batch_model: Path) -> None:
    with pytest.raises(ConfigError, match="fixed at \\[1, 4\\]"):
        bench([fixed_batch_model], quick_settings(scenarios=("offline",), batches=(1, 8)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scenarios": ("batchy",)}, "unknown scenario 'batchy'"),
        ({"scenarios": ("server",)}, "needs --qps N or --find-peak"),
        ({"scenarios": ("server",), "find_peak": True}, "needs --latency-bound"),
        ({"min_windows": 5, "max_windows": 2}, "--min-windows <= --max-windows"),
        ({"stability": 5.0}, "--stability is a fraction"),
    ],
)
def test_unusable_settings_are_config_errors(
    digits_ort: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace("*", "\\*")):
        bench([digits_ort], quick_settings(**changes))


def test_unstable_windows_raise_a_noise_warning(digits_ort: Path) -> None:
    # A zero-width stability band cannot be met: the run must say its figure is untrustworthy.
    report = bench([digits_ort], quick_settings(stability=1e-12))
    assert not report.measurements[0].stable
    assert any("too noisy to trust" in w for w in report.warnings)
    assert math.isfinite(report.measurements[0].window_spread)
