"""``lower-sequences``: ONNX's own sequence test models (positions given at run time) lowered to
stacked tensors give the shipped outputs, on ONNX Runtime and on OpenVINO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from duh.passes import PassContext, create_pass

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "simple"
CTX = PassContext("openvino", "cpu", "fp32", Path("."))


def _case(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    model = onnx.load(str(DATA / name / "model.onnx"))
    folder = DATA / name / "test_data_set_0"
    inputs = [
        numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(folder.glob("input_*.pb"))
    ]
    outputs = [
        numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(folder.glob("output_*.pb"))
    ]
    # the positions are inputs with a default (an initializer of the same name); none shipped
    names = [v.name for v in model.graph.input][: len(inputs)]
    return model, dict(zip(names, inputs, strict=True)), outputs


@pytest.mark.parametrize("name", [f"test_sequence_model{i}" for i in (1, 2, 3)])
def test_positions_from_the_inputs_stay_inputs(name: str, tmp_path: Path) -> None:
    model, feeds, want = _case(name)
    result = create_pass("lower-sequences").run(model, CTX)
    assert result.changed
    assert not any(n.op_type.startswith("Sequence") for n in result.model.graph.node)
    onnx.checker.check_model(result.model, full_check=True)
    s = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = s.run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    # every position the scalars may take (negative ones count from the end)
    positions = [i.name for i in model.graph.initializer if i.name.startswith("pos")]
    assert positions
    for pos in range(-2, 2):
        moved = {**feeds, **{p: np.array(pos, np.int64) for p in positions}}
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(s.run(None, moved)[0], ref.run(None, moved)[0])
    pytest.importorskip("openvino")
    import duh

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    duh.build(path, "openvino:cpu-fp32", tmp_path / "m.duh", cache=False)
    np.testing.assert_allclose(duh.load(tmp_path / "m.duh").run(feeds)["out"], want[0])
