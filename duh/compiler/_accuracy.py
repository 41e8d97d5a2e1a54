"""The accuracy budget of a build: eval data, a metric, and the drop a user can afford.

``--eval DATA --metric top1|cosine|mse|module:fn --max-drop X [--drop-type absolute|relative]
[--labels L]``. The metric is taken on the eval data against the labels (``--labels``) or,
without them, against the fp32 source model's own outputs (top-1 then is agreement with fp32's
argmax). Its drop is fp32's value less the candidate's (for ``mse``, the candidate's less
fp32's), relative to fp32's value with ``--drop-type relative``. ``module:fn`` is a function the
user names on the command line, ``fn(outputs, reference) -> float`` (higher is better), with
``outputs`` a list of ``{output name: array}`` (one per eval sample) and ``reference`` the
labels array or, without labels, fp32's outputs in the same form; it runs user code, so it
needs ``--trust-code`` (``trust_code=True``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import CalibrationError, ConfigError, DuhError, ModelError
from duh.runtime import Session, TensorSpec

__all__ = ["METRICS", "AccuracyBudget", "EvalSet", "load_eval", "plot_sensitivity"]

log = logging.getLogger(__name__)

METRICS = ("top1", "cosine", "mse")
_DROP_TYPES = ("absolute", "relative")
_ROW = "__duh_row__"

Outputs = dict[str, np.ndarray]
MetricFn = Callable[[list[Outputs], Any], float]


@dataclass(frozen=True, slots=True)
class AccuracyBudget:
    """What a user can afford to lose: checked when made (a wrong spelling is one ConfigError)."""

    data: str | Path = field(metadata={"help": "eval data, in --calib's formats (--eval)"})
    metric: str = field(default="top1", metadata={"help": "top1, cosine, mse or module:fn"})
    max_drop: float = field(default=0.01, metadata={"help": "the largest drop allowed"})
    drop_type: str = field(default="absolute", metadata={"help": "absolute or relative"})
    labels: str | Path | None = field(
        default=None, metadata={"help": "labels: an array of DATA's .npz by name, or a file"}
    )
    samples: int = field(default=1000, metadata={"help": "eval samples used at most"})
    report_layers: bool = field(
        default=False, metadata={"help": "rank the layers by sensitivity even when INT8 meets it"}
    )

    def __post_init__(self) -> None:
        if self.metric not in METRICS and not _is_function(self.metric):
            raise ConfigError(
                f"--metric {self.metric!r} is not a metric; use top1, cosine, mse, or "
                "module:function for your own"
            )
        if self.drop_type not in _DROP_TYPES:
            raise ConfigError(
                f"--drop-type {self.drop_type!r} is not absolute or relative; use one of them"
            )
        if not 0 <= self.max_drop < float("inf"):
            raise ConfigError(f"--max-drop must be a number >= 0, got {self.max_drop}")
        if self.samples < 1:
            raise ConfigError(f"eval samples must be at least 1, got {self.samples}")

    @property
    def lower_is_better(self) -> bool:
        """Whether the metric is an error (mse): its drop is a rise."""
        return self.metric == "mse"

    def to_json(self) -> dict[str, Any]:
        """The budget as the manifest records it."""
        return {
            "data": str(self.data),
            "labels": None if self.labels is None else str(self.labels),
            "metric": self.metric,
            "max_drop": self.max_drop,
            "drop_type": self.drop_type,
        }


def _is_function(metric: str) -> bool:
    module, sep, name = metric.rpartition(":")
    return bool(sep and module and name.isidentifier())


def _load_function(spec: str) -> MetricFn:
    """``module:fn`` (an importable module or a ``path.py``) -> the function it names."""
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader = importlib.util.spec_from_file_location(path.stem, path)
            if loader is None or loader.loader is None or not path.is_file():
                raise ImportError(f"no file {module_name}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--metric {spec}: cannot import {module_name} ({exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"--metric {spec}: {module_name} has no function {name}")
    metric: MetricFn = fn
    return metric


def _labels(budget: AccuracyBudget, data: Path, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The labels: an array of the eval .npz by name, or a .npy/.npz file of one array."""
    assert budget.labels is not None
    name = str(budget.labels)
    if name in arrays:
        return np.asarray(arrays[name])
    path = Path(budget.labels)
    if not path.is_file():
        raise ConfigError(
            f"--labels {name}: neither an array of {data.name} "
            f"({', '.join(sorted(arrays))}) nor a file; name the array or give a .npy/.npz"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--labels {path.name} is not a readable .npy/.npz ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if len(loaded.files) != 1:
            raise ConfigError(f"--labels {path.name} holds {len(loaded.files)} arrays, not one")
        return np.asarray(loaded[loaded.files[0]])


@dataclass(frozen=True, slots=True)
class EvalSet:
    """The eval feeds (one sample each), their labels, fp32's outputs on them, and the metric."""

    budget: AccuracyBudget
    feeds: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None
    fp32_outputs: tuple[Outputs, ...]
    source: str
    function: MetricFn | None = field(default=None, compare=False, repr=False)

    def run(self, session: Session) -> list[Outputs]:
        """Run ``session`` on every eval feed."""
        return [session.run(feed) for feed in self.feeds]

    def score(self, outputs: Sequence[Outputs]) -> float:
        """The metric of ``outputs`` (one per eval feed)."""
        reference: Any = self.labels if self.labels is not None else list(self.fp32_outputs)
        if self.function is not None:
            try:
                return float(self.function(list(outputs), reference))
            except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
                raise ConfigError(
                    f"--metric {self.budget.metric} raised {type(exc).__name__}: {exc}"
                ) from None
        first = [np.asarray(next(iter(o.values()))) for o in outputs]
        if self.labels is not None:
            want = [np.asarray(self.labels[i]) for i in range(len(first))]
        else:
            want = [np.asarray(next(iter(o.values()))) for o in self.fp32_outputs]
        if self.budget.metric == "top1":
            got = [int(np.argmax(f.reshape(-1))) for f in first]
            if self.labels is None:
                ref = [int(np.argmax(w.reshape(-1))) for w in want]
            else:
                ref = [int(w.reshape(-1)[0]) for w in want]
            return float(np.mean(np.asarray(got) == np.asarray(ref)))
        a = [f.astype(np.float64).reshape(-1) for f in first]
        b = [w.astype(np.float64).reshape(-1) for w in want]
        if any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
            raise ConfigError(
                f"--metric {self.budget.metric}: the labels' shape per sample "
                f"{list(b[0].shape)} is not the first output's {list(a[0].shape)}"
            )
        if self.budget.metric == "mse":
            return float(np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b, strict=True)]))
        return float(np.mean([_cosine(x, y) for x, y in zip(a, b, strict=True)]))

    @property
    def fp32(self) -> float:
        """The fp32 source model's metric."""
        return self.score(self.fp32_outputs)

    def drop(self, value: float) -> float:
        """How much worse ``value`` is than fp32's (relative to it with drop_type relative)."""
        base = self.fp32
        lost = value - base if self.budget.lower_is_better else base - value
        if self.budget.drop_type == "absolute":
            return lost
        if base == 0:
            raise ConfigError(
                f"accuracy budget: a relative drop of {self.budget.metric} is undefined "
                "when fp32's value is 0; use --drop-type absolute"
            )
        return lost / abs(base)

    def within(self, value: float) -> bool:
        """Whether ``value`` meets the budget."""
        return self.drop(value) <= self.budget.max_drop + 1e-12


def _fp32_outputs(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[Outputs]:
    """The fp32 source model's outputs on ``feeds``, run on ONNX Runtime (the reference)."""
    from duh.compiler.ingest import normalize_for_engine
    from duh.runtime import load
    from duh.targets import save_onnx

    with tempfile.TemporaryDirectory(prefix="duh-eval-") as tmp:
        path = Path(tmp) / "source.onnx"
        save_onnx(normalize_for_engine(model, "onnxruntime", 26, 13), path)
        session = load(path)
        try:
            return [session.run(f) for f in feeds]
        finally:
            session.close()


def load_eval(
    budget: AccuracyBudget,
    model: onnx.ModelProto,
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    preprocess: Any = None,
    trust_code: bool = False,
) -> EvalSet:
    """Read the eval data (``--calib``'s formats) and run the fp32 ``model`` on it.

    With labels the data must be a .npz or .npy: a row index travels with each sample through
    the reader, so that the labels follow its order.
    """
    from duh.calibration import load_calibration

    function = None
    if _is_function(budget.metric):
        if not trust_code:
            raise ConfigError(
                f"--metric {budget.metric} runs your Python code; allow it with --trust-code"
            )
        function = _load_function(budget.metric)
    if budget.labels is None and budget.metric != "top1" and function is None:
        log.info("accuracy budget: %s against the fp32 model's outputs", budget.metric)
    data = Path(budget.data)
    labels = None
    with tempfile.TemporaryDirectory(prefix="duh-eval-") as tmp:
        specs = list(inputs)
        source: str | Path = data
        if budget.labels is not None:
            arrays = _eval_arrays(data, inputs)
            labels = _labels(budget, data, arrays)
            rows = len(next(iter(arrays[s.name] for s in inputs if s.name in arrays)))
            if len(labels) != rows:
                raise ConfigError(
                    f"--labels has {len(labels)} rows but {data.name} has {rows} samples"
                )
            source = Path(tmp) / data.with_suffix(".npz").name
            merged = {**arrays, _ROW: np.arange(rows, dtype=np.int64)}
            np.savez(source, **merged)  # type: ignore[arg-type]
            specs.append(TensorSpec(_ROW, "int64", ("batch",)))
        try:
            loaded = load_calibration(
                source, specs, samples=budget.samples, shapes=shapes,
                preprocess=preprocess, purpose="eval data",
            )  # fmt: skip
        except CalibrationError as exc:
            raise CalibrationError(f"--eval: {exc}") from None
    feeds = loaded.feeds
    if labels is not None:
        order = [int(f[_ROW].reshape(-1)[0]) for f in feeds]
        labels = labels[np.asarray(order)]
        feeds = tuple({k: v for k, v in f.items() if k != _ROW} for f in feeds)
    try:
        fp32 = tuple(_fp32_outputs(model, feeds))
    except DuhError as exc:
        raise ModelError(f"--eval: the fp32 source model fails on the eval data: {exc}") from None
    return EvalSet(budget, feeds, labels, fp32, loaded.source, function)


def _eval_arrays(data: Path, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The arrays of a .npz/.npy eval file (labels need one: their order is its rows')."""
    if data.suffix.lower() not in (".npz", ".npy") or not data.is_file():
        raise ConfigError(
            f"--labels needs --eval as a .npz or .npy file (got {data.name}); put the inputs "
            "and labels in one .npz"
        )
    try:
        loaded = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"--eval {data.name} is not readable ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return {inputs[0].name: loaded}
    with loaded:
        return {k: np.asarray(loaded[k]) for k in loaded.files}


def plot_sensitivity(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Draw the sensitivity table (error each quantized op adds) as bars into ``path``."""
    from duh.errors import MissingDependencyError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "bench", "--plot") from None
    shown = list(rows)[:40]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5))
    names = [f"{r['node']} ({r['op_type']})" for r in shown][::-1]
    added = [float(r["added"]) for r in shown][::-1]
    colors = ["tab:red" if r.get("float") else "tab:blue" for r in shown][::-1]
    ax.barh(names, added, color=colors)
    ax.set_xlabel("error the op adds under INT8 (relative RMS); red: kept in float")
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _cosine(got: np.ndarray, want: np.ndarray) -> float:
    """The cosine of one sample; a sample with NaN or Inf where the labels have none is the
    worst there is (-1), not NaN, so that the metric's drop stays a number."""
    if not np.all(np.isfinite(got)) and np.all(np.isfinite(want)):
        return -1.0
    norms = float(np.linalg.norm(got) * np.linalg.norm(want))
    return float(got @ want / norms) if norms else float(np.array_equal(got, want))
