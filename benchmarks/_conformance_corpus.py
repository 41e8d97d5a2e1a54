"""The cases of ONNX's own backend test data (shipped in the onnx wheel) and how to check them.

A case is a model and data sets of inputs with the outputs they must give. ``simple``,
``pytorch-converted`` and ``pytorch-operator`` keep ``CASE/model.onnx`` and
``CASE/test_data_set_N/{input,output}_K.pb``. ``light`` keeps ``light_X.onnx`` (real-size CNNs whose
weights are ``ConstantOfShape`` nodes) and ``light_X_output_K.pb``; its inputs are not stored:
ONNX's backend runner makes them (``arange(n) / n`` in the input's shape), and so do we.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "SUITES",
    "Case",
    "DataSet",
    "close_enough",
    "data_root",
    "discover",
    "find_case",
    "load_data",
]

SUITES = ("simple", "light", "pytorch-converted", "pytorch-operator")
# What ONNX Runtime's backend tests hold an fp32 result to (elementwise, relative to each value).
RTOL = 1e-3
ATOL = 1e-4


@dataclass(frozen=True, slots=True)
class Case:
    """One model of the corpus: ``suite/name`` and where its files are."""

    suite: str
    name: str
    model: Path

    @property
    def key(self) -> str:
        """``suite/name``, how the table, the JSON and ``--filter`` name it."""
        return f"{self.suite}/{self.name}"


@dataclass(frozen=True, slots=True)
class DataSet:
    """Inputs by graph input name, and the expected outputs in graph output order."""

    inputs: dict[str, Any]
    outputs: tuple[Any, ...]


def data_root() -> Path:
    """``onnx/backend/test/data`` of the installed onnx."""
    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"


def discover(suites: Sequence[str] = SUITES, root: Path | None = None) -> list[Case]:
    """Every case of ``suites``, sorted by suite then name."""
    root = root or data_root()
    cases = []
    for suite in suites:
        folder = root / suite
        if suite == "light":
            cases += [Case(suite, p.stem, p) for p in sorted(folder.glob("light_*.onnx"))]
        else:
            cases += [
                Case(suite, p.name, p / "model.onnx")
                for p in sorted(folder.iterdir())
                if (p / "model.onnx").is_file()
            ]
    return cases


def find_case(key: str, root: Path | None = None) -> Case:
    """The case named ``suite/name``."""
    suite, name = key.split("/", 1)
    root = root or data_root()
    if suite == "light":
        return Case(suite, name, root / suite / f"{name}.onnx")
    return Case(suite, name, root / suite / name / "model.onnx")


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in weights]


def _read_value(path: Path, kind: str) -> Any:
    data = path.read_bytes()
    if kind == "sequence_type":
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if kind == "optional_type":
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    if kind == "map_type":
        mp = onnx.MapProto()
        mp.ParseFromString(data)
        return numpy_helper.to_dict(mp)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def _light_input(value: onnx.ValueInfoProto) -> np.ndarray:
    # As onnx.backend.test.runner.Runner.generate_dummy_data(random=False) makes them.
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim
    )
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def load_data(case: Case, model: onnx.ModelProto | None = None) -> list[DataSet]:
    """The case's data sets (inputs and the outputs they must give)."""
    model = model or onnx.load_model(str(case.model), load_external_data=False)
    inputs = _graph_inputs(model)
    outputs = list(model.graph.output)
    if case.suite == "light":
        feed = {v.name: _light_input(v) for v in inputs}
        expected = tuple(
            numpy_helper.to_array(onnx.load_tensor(str(p)))
            for p in (
                case.model.with_name(f"{case.name}_output_{i}.pb") for i in range(len(outputs))
            )
        )
        return [DataSet(feed, expected)]
    sets = []
    for folder in sorted(case.model.parent.glob("test_data_set_*")):
        feed = {
            v.name: _read_value(folder / f"input_{i}.pb", v.type.WhichOneof("value") or "")
            for i, v in enumerate(inputs)
            if (folder / f"input_{i}.pb").is_file()
        }
        expected = tuple(
            _read_value(folder / f"output_{i}.pb", v.type.WhichOneof("value") or "")
            for i, v in enumerate(outputs)
        )
        sets.append(DataSet(feed, expected))
    return sets


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, Mapping):
        for key in sorted(value):
            yield from _leaves(value[key])
    else:
        yield value


def close_enough(got: Any, want: Any, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None when ``got`` matches ``want`` elementwise (fp32 tolerance), else what differs."""
    gots, wants = list(_leaves(got)), list(_leaves(want))
    if len(gots) != len(wants):
        return f"{len(gots)} tensors where {len(wants)} were expected"
    for g, w in zip(gots, wants, strict=True):
        if w is None or g is None:
            if (g is None) != (w is None):
                return "an optional value is missing or present where it should not be"
            continue
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"shape {list(g.shape)} where {list(w.shape)} was expected"
        if w.dtype.kind not in "fc" or g.dtype.kind not in "fc":
            if not np.array_equal(g.astype(w.dtype) if w.dtype.kind != "O" else g, w):
                return f"{int(np.sum(g != w))} of {w.size} values differ"
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        same_nan = np.isnan(g64) == np.isnan(w64)
        if not np.all(same_nan):
            return "NaN where a number was expected (or the reverse)"
        ok = np.isclose(g64, w64, rtol=rtol, atol=atol, equal_nan=True)
        if not np.all(ok):
            diff = np.abs(g64 - w64)[~ok]
            return (
                f"{int(np.sum(~ok))} of {w.size} values off by up to {float(np.max(diff)):.3g} "
                f"(atol {atol:g} + rtol {rtol:g} x |expected|)"
            )
    return None
