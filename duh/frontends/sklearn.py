"""scikit-learn, XGBoost and LightGBM into ONNX: ``.skops`` files; pickles with ``--trust-code``.

A ``.skops`` file is read by ``skops.io``, which builds only the types it is told to trust and
runs no code from the file. duh trusts skops' defaults plus the few estimator types whose state
is plain data (a tree's arrays, a booster's serialized model); any other type the file names is
refused without ``--trust-code``. Pickles (``.pkl``, ``.pickle``, ``.joblib``) run code when
they are read, so they always need ``--trust-code``.

The export is skl2onnx, with onnxmltools' XGBoost and LightGBM converters registered so that
they convert inside pipelines too. The input is one float32 matrix, ``input`` ``[batch,
n_features_in_]``; a classifier's outputs are tensors (``label`` and ``probabilities``, no
ZipMap), a regressor's ``variable``. The reference runs ``predict`` / ``predict_proba``.
"""

from __future__ import annotations

import functools
import pickle
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import ConfigError, MissingDependencyError, ModelError
from duh.frontends._base import Exported, Frontend, FrontendOptions, frontend

__all__ = ["SKLEARN", "TRUSTED_TYPES"]

_SKOPS = ".skops"
_PICKLED = (".pickle", ".joblib")
# `.pkl` is shared with PyTorch's pickled modules: torch.save writes a zip archive, a scikit-learn
# pickle is a bare pickle stream, so a `.pkl` that is not a zip archive is read here.
_AMBIGUOUS = ".pkl"
_DEFAULT_OPSET = 17
_ML_OPSET = 3
INPUT_NAME = "input"

# Types skops does not trust by default whose state, when loaded, is data and not code: a
# fitted tree's node arrays, a booster rebuilt from its serialized model bytes.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "sklearn.tree._tree.Tree",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
    }
)


def _claims(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix == _AMBIGUOUS:
        return not zipfile.is_zipfile(path) if Path(path).is_file() else True
    return suffix == _SKOPS or suffix in _PICKLED


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(module.split(".")[0], "sklearn", what) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _missing_package(exc: ImportError, file: Path) -> MissingDependencyError | ModelError:
    """A model whose classes come from a package this environment lacks."""
    top = (exc.name or "").split(".")[0]
    if top in ("xgboost", "lightgbm"):
        return MissingDependencyError(top, top, f"the {top} model in {file.name}")
    return ModelError(
        f"{file.name} needs python package {top or exc.name!r}, which is not installed; install "
        "the package the model was trained with"
    )


def _load_skops(file: Path, options: FrontendOptions) -> Any:
    sio = _need("skops.io", "scikit-learn models in .skops files")
    if not zipfile.is_zipfile(file):
        raise ModelError(
            f"{file.name} is not a readable .skops file (not a zip archive); the file is "
            "truncated, corrupt or of another format: save it again with skops.io.dump"
        )
    try:
        untrusted = list(sio.get_untrusted_types(file=file))
        unknown = sorted(set(untrusted) - TRUSTED_TYPES)
        if unknown and not options.trust_code:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ConfigError(
                f"{file.name} holds types that skops does not trust ({shown}): loading them may "
                "run code from the file; build it only if you trust where it came from, with "
                "--trust-code"
            )
        return sio.load(file, trusted=untrusted)
    except ImportError as exc:
        raise _missing_package(exc, file) from None
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError) as exc:
        raise ModelError(
            f"{file.name} is not a readable .skops file ({_first_line(exc)}); the file is "
            "truncated or corrupt: save it again with skops.io.dump"
        ) from None


def _load_pickle(file: Path, options: FrontendOptions) -> Any:
    if not options.trust_code:
        raise ConfigError(
            f"{file} is a pickle: reading it runs code from the file (it is unpickled); build it "
            "only if you trust where it came from, with --trust-code, or save the model with "
            "skops.io.dump (.skops), which duh reads safely"
        )
    try:
        if file.suffix.lower() == ".joblib":
            joblib = _need("joblib", "scikit-learn models in .joblib files")
            return joblib.load(file)
        with file.open("rb") as stream:
            return pickle.load(stream)  # the user opted in with --trust-code
    except ImportError as exc:
        raise _missing_package(exc, file) from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, OSError) as exc:
        raise ModelError(
            f"{file.name} is not a readable pickle ({_first_line(exc)}); the file is truncated, "
            "corrupt or of another format"
        ) from None


def _describe(model: Any) -> str:
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        return f"{type(model).__name__}({', '.join(_describe(s) for _, s in steps)})"
    return type(model).__name__


@functools.cache
def _register_converters() -> tuple[str, ...]:
    """Let skl2onnx convert XGBoost and LightGBM models (also inside pipelines)."""
    import skl2onnx
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    done: list[str] = []
    try:
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    except ImportError:
        pass
    else:
        skl2onnx.update_registered_converter(
            xgboost.XGBClassifier, "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes, convert_xgboost, options=classifier_options,
        )
        skl2onnx.update_registered_converter(
            xgboost.XGBRegressor, "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes, convert_xgboost,
        )
        done.append("xgboost")
    try:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        pass
    else:
        skl2onnx.update_registered_converter(
            lightgbm.LGBMClassifier, "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes, convert_lightgbm, options=classifier_options,
        )
        skl2onnx.update_registered_converter(
            lightgbm.LGBMRegressor, "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes, convert_lightgbm,
        )
        done.append("lightgbm")
    return tuple(done)


def _n_features(model: Any, name: str) -> int:
    n = getattr(model, "n_features_in_", None)
    if not isinstance(n, int | np.integer) or n < 1:
        # A fitted pipeline delegates n_features_in_ to its first step: a custom transformer
        # there (no n_features_in_, and no skl2onnx converter) is the step to name.
        for step_name, step in getattr(model, "steps", None) or ():
            if step is None or step == "passthrough":
                continue
            if getattr(step, "n_features_in_", None) is None:
                kind = f"{type(step).__module__}.{type(step).__qualname__}"
                raise ModelError(
                    f"{name} holds a {type(model).__name__} whose step {step_name!r} is a "
                    f"{kind}, which records no n_features_in_ (a custom transformer): skl2onnx "
                    "needs a converter for it (skl2onnx.update_registered_converter); use "
                    "scikit-learn's own transformers, or export the model to ONNX yourself"
                )
            break
        raise ModelError(
            f"{name} holds a {type(model).__name__}, not a fitted scikit-learn-style estimator "
            "(no n_features_in_); save the fitted estimator or pipeline (XGBoost and LightGBM: "
            "their scikit-learn classes, XGBClassifier / LGBMClassifier)"
        )
    return int(n)


def _dedupe_opsets(model: onnx.ModelProto) -> None:
    """One opset_import per domain (onnxmltools can add the default domain twice)."""
    best: dict[str, int] = {}
    for entry in model.opset_import:
        best[entry.domain] = max(best.get(entry.domain, 0), entry.version)
    del model.opset_import[:]
    for domain, version in best.items():
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def _opset_of(model: onnx.ModelProto, domain: str) -> int | None:
    return next((o.version for o in model.opset_import if o.domain == domain), None)


def _reference(model: Any, outputs: list[onnx.ValueInfoProto], classifier: bool) -> Any:
    dtypes = [onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in outputs]
    ranks = [len(o.type.tensor_type.shape.dim) for o in outputs]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(feeds[INPUT_NAME], dtype=np.float32)
        values = [model.predict(x)] + ([model.predict_proba(x)] if classifier else [])
        result: dict[str, np.ndarray] = {}
        for out, value, dtype, rank in zip(outputs, values, dtypes, ranks, strict=False):
            array = np.asarray(value)
            if rank == 2 and array.ndim == 1:
                array = array.reshape(-1, 1)
            result[out.name] = array.astype(dtype, copy=False)
        return result

    return run


def _export(path: str, options: FrontendOptions) -> Exported:
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model file {path!r} does not exist; check the path")
    sklearn = _need("sklearn", "scikit-learn models")
    skl2onnx = _need("skl2onnx", "scikit-learn models")
    _need("onnxmltools", "XGBoost and LightGBM models")
    form = "skops" if file.suffix.lower() == _SKOPS else file.suffix.lower().lstrip(".")
    model = _load_skops(file, options) if form == "skops" else _load_pickle(file, options)
    n_features = _n_features(model, file.name)
    registered = _register_converters()
    from skl2onnx.common.data_types import FloatTensorType

    opset = options.opset or _DEFAULT_OPSET
    classifier = bool(sklearn.base.is_classifier(model))
    try:
        onx = skl2onnx.convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset={"": opset, "ai.onnx.ml": _ML_OPSET},
            options={"zipmap": False} if classifier else None,
        )
    except (RuntimeError, ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise ModelError(
            f"skl2onnx cannot convert {_describe(model)} from {file.name} ({_first_line(exc)}); "
            "use estimators skl2onnx supports, or export the model to ONNX yourself"
        ) from None
    _dedupe_opsets(onx)
    outputs = list(onx.graph.output)
    record: dict[str, Any] = {
        "frontend": "sklearn",
        "version": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxmltools": _version("onnxmltools"),
        "format": form,
        "estimator": _describe(model),
        "opset": _opset_of(onx, ""),
        "ml_opset": _opset_of(onx, "ai.onnx.ml"),
        "zipmap": False,
        "n_features": n_features,
        "input": INPUT_NAME,
        "outputs": [o.name for o in outputs],
    }
    for package in registered:
        if _uses(model, package):
            record[package] = _version(package) or _version(f"{package}-cpu")
    return Exported(model=onx, record=record, reference=_reference(model, outputs, classifier))


def _uses(model: Any, package: str) -> bool:
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        return any(_uses(step, package) for _, step in steps)
    return type(model).__module__.split(".")[0] == package


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


SKLEARN = frontend(
    Frontend(
        name="sklearn",
        extra="sklearn",
        summary="scikit-learn / XGBoost / LightGBM (.skops; .pkl/.joblib with --trust-code)",
        claims=_claims,
        export=_export,
    )
)
