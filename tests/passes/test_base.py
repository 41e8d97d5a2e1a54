"""The pass contract: declared ``lossy``/``needs_calibration``, registration, one half-precision pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from duh.passes import (
    PassBase,
    PassContext,
    PassResult,
    config_help,
    create_pass,
    pass_names,
    register_pass,
)
from tests.passes._models import conv_bn_model, ctx, mlp_block_model, run_ort


def test_every_pass_declares_its_contract() -> None:
    model = conv_bn_model()
    declared = {}
    for name in pass_names():
        p = create_pass(name)
        assert isinstance(type(p).lossy, bool), name
        declared[name] = (p.lossy, p.needs_calibration(model))
    # quantize auto picks static INT8 for a CNN: it needs data, and it changes results.
    assert declared == {
        "bf16": (False, False),
        "cleanup": (False, False),
        "fold-constants": (False, False),
        "fp16": (False, False),
        "fuse": (False, False),
        "lower-ml": (False, False),
        "lower-sequences": (False, False),
        "prune": (True, False),
        "quantize": (True, True),
        "simplify": (False, False),
    }
    assert not create_pass("quantize", {"mode": "dynamic"}).needs_calibration(model)


def test_registration_refuses_a_pass_without_lossy() -> None:
    @dataclass(frozen=True, slots=True)
    class Undeclared:
        def needs_calibration(self, model: onnx.ModelProto) -> bool:
            return False

        def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
            return PassResult(model, False)

    with pytest.raises(TypeError, match=r"'undeclared' \(.*Undeclared\) declares no `lossy"):
        register_pass("undeclared")(Undeclared)
    assert "undeclared" not in pass_names()


def test_registration_refuses_a_pass_without_needs_calibration() -> None:
    @dataclass(frozen=True, slots=True)
    class NoCalibrationAnswer:
        lossy: ClassVar[bool] = False

        def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
            return PassResult(model, False)

    with pytest.raises(TypeError, match="lacks needs_calibration"):
        register_pass("no-calibration-answer")(NoCalibrationAnswer)
    assert "no-calibration-answer" not in pass_names()


def test_a_registered_name_is_refused_twice() -> None:
    @dataclass(frozen=True, slots=True)
    class Again(PassBase):
        lossy: ClassVar[bool] = False

    with pytest.raises(ValueError, match="'fuse' is registered twice"):
        register_pass("fuse")(Again)


def test_fp16_and_bf16_are_one_pass_with_two_types(tmp_path: Path) -> None:
    fp16, bf16 = create_pass("fp16"), create_pass("bf16")
    assert type(fp16).__mro__[1] is type(bf16).__mro__[1]  # the shared implementation
    assert [f.name for f in dataclasses.fields(fp16)] == [f.name for f in dataclasses.fields(bf16)]
    assert [r for r in config_help("fp16") if r[0] != "opset"] == [
        r for r in config_help("bf16") if r[0] != "opset"
    ]
    assert ("opset", "0", "convert to this opset first (0: keep)") in config_help("fp16")
    assert ("opset", "22") == config_help("bf16")[-1][:2]
    assert not hasattr(fp16, "__dict__")  # still slotted
    model = mlp_block_model()
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    for p, low in ((fp16, TensorProto.FLOAT16), (bf16, TensorProto.BFLOAT16)):
        out = p.run(model, ctx(tmp_path)).model
        assert {i.data_type for i in out.graph.initializer if i.name.startswith("w")} == {low}
    out = fp16.run(model, ctx(tmp_path)).model
    np.testing.assert_allclose(
        run_ort(out, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=2e-2, atol=2e-2
    )
