from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from duh.errors import ConfigError
from duh.passes import create_pass
from tests.passes._models import FIXTURES, conv_bn_model, ctx, run_ort


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_unstructured_reaches_the_target_sparsity_and_only_drops_small_weights(
    tmp_path: Path,
) -> None:
    model = conv_bn_model()
    result = create_pass("prune", {"sparsity": 0.6, "min_elements": 100}).run(model, ctx(tmp_path))
    before, after = _weights(model), _weights(result.model)
    for name in ("w1", "w2", "fc_w"):
        zeros = np.mean(after[name] == 0)
        assert 0.59 <= zeros <= 0.61, name
        kept = after[name] != 0
        np.testing.assert_array_equal(after[name][kept], before[name][kept])
        assert np.abs(before[name][~kept]).max() <= np.abs(before[name][kept]).min()
    assert any("60.0% zeros" in n for n in result.notes)


def test_pruning_changes_numbers_by_a_bounded_amount_on_the_digits(tmp_path: Path) -> None:
    data = np.load(FIXTURES / "digits_test.npz")
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    want = run_ort(model, {"input": data["input"]})[0].argmax(1)
    light = create_pass("prune", {"sparsity": 0.3}).run(model, ctx(tmp_path)).model
    heavy = create_pass("prune", {"sparsity": 0.95}).run(model, ctx(tmp_path)).model
    agree_light = np.mean(run_ort(light, {"input": data["input"]})[0].argmax(1) == want)
    agree_heavy = np.mean(run_ort(heavy, {"input": data["input"]})[0].argmax(1) == want)
    assert agree_light >= 0.98
    assert agree_heavy < agree_light


def test_channel_pruning_shrinks_the_layers_and_their_consumers(tmp_path: Path) -> None:
    model = conv_bn_model()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    result = create_pass("prune", {"mode": "channels", "sparsity": 0.25, "min_elements": 0}).run(
        model, ctx(tmp_path)
    )
    after = _weights(result.model)
    # conv1 (16 ch) -> bn1 -> relu -> conv2: 4 channels go, and conv2 loses 4 input channels.
    assert after["w1"].shape == (12, 3, 3, 3) and after["b1"].shape == (12,)
    assert after["bn1_s"].shape == (12,) and after["w2"].shape[1] == 12
    # conv2 (32 ch) -> bn2 -> relu -> GAP -> Flatten -> Gemm: 8 go, the Gemm loses 8 inputs.
    assert after["w2"].shape[0] == 24 and after["fc_w"].shape == (10, 24)
    onnx.checker.check_model(result.model, full_check=True)
    got, want = run_ort(result.model, {"x": x})[0], run_ort(model, {"x": x})[0]
    assert got.shape == want.shape
    # The smallest-norm filters go: the output moves, but stays correlated with the original.
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.5
    assert any("12 output channels removed from 2 layers" in n for n in result.notes)


def test_bad_sparsity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sparsity must be in"):
        create_pass("prune", {"sparsity": 1.5})
