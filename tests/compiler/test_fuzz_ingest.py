"""Hostile models at ingest: a fixed-seed slice of the fuzzer, and the holes it found, by name.

The long run is ``python -m benchmarks.fuzz_ingest --cases N --seed S``.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from benchmarks._fuzz_mutations import KINDS, SECRET_NAME
from benchmarks.fuzz_ingest import run, seeds, summarize
from duh.compiler.ingest import ingest
from duh.errors import ModelError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_a_fixed_seed_slice_ends_every_case_ok_or_in_one_error_line(tmp_path: Path) -> None:
    # every kind on every seed model (the committed fixtures), then a few drawn at random
    cases = len(seeds(0.0)) * len(KINDS) + 3
    records = run(cases, seed=14, timeout=90.0, memory_mb=6144, kinds=KINDS, max_seed_mb=0.0,
                  workdir=tmp_path)
    summary = summarize(records)
    assert summary["other"] == 0, summary["findings"]
    assert {r["kind"] for r in records} == set(KINDS)
    assert summary["refused_cleanly"] >= 24  # most mutations are refused, each in one line
    refused = [r["commands"]["build"]["detail"] for r in records
               if r["commands"]["build"]["status"] == "refused"]
    assert all(d.startswith("error: ") and "\n" not in d for d in refused)


def _with_external(tmp_path: Path, location: str) -> Path:
    model = onnx.load_model(str(FIXTURES / "multi_io.onnx"))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    init.data_location = onnx.TensorProto.EXTERNAL
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / SECRET_NAME).write_bytes(b"\0" * 64)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    "location", [f"../{SECRET_NAME}", f"sub/../../{SECRET_NAME}", "ABSOLUTE", "link.bin",
                 f"linkdir/{SECRET_NAME}"],
)
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    secret = tmp_path / SECRET_NAME
    if location == "ABSOLUTE":
        location = str(secret)
    path = _with_external(tmp_path, location)
    (path.parent / "sub").mkdir()
    os.symlink(secret, path.parent / "link.bin")
    os.symlink(tmp_path, path.parent / "linkdir")
    with pytest.raises(ModelError, match="outside the model's folder"):
        ingest(path)


def test_weights_whose_bytes_do_not_fill_their_dims_are_refused(tmp_path: Path) -> None:
    model = onnx.load_model(str(FIXTURES / "digits_cnn.onnx"))
    model.graph.initializer[0].dims[:] = [1]
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=r"holds \d+ bytes, its dims need 4"):
        ingest(path)


def test_an_undefined_weight_data_type_is_refused(tmp_path: Path) -> None:
    model = onnx.load_model(str(FIXTURES / "digits_cnn.onnx"))
    model.graph.initializer[0].data_type = 99
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="data type 99, which ONNX does not define"):
        ingest(path)


def test_a_fixed_input_larger_than_any_feed_is_refused(tmp_path: Path) -> None:
    model = onnx.load_model(str(FIXTURES / "digits_cnn.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**31
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="no inference feed is that large"):
        ingest(path)


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    model = onnx.load_model(str(FIXTURES / "multi_io.onnx"))
    model.graph.node[0].input[0] = "marker"
    data = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(b"marker", b"\xdearker", 1))  # same length: a node input
    with pytest.raises(ModelError, match="not valid UTF-8"):
        ingest(path)


def test_an_undefined_input_element_type_is_refused(tmp_path: Path) -> None:
    model = onnx.load_model(str(FIXTURES / "multi_io.onnx"))
    model.graph.input[0].type.tensor_type.elem_type = 2**31 - 1
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="element type 2147483647, which ONNX does not define"):
        ingest(path)
