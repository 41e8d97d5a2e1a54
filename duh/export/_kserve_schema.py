"""Check a KServe resource against the ``kserve`` package's models (its CRD schema, generated).

The kserve SDK ships one OpenAPI model class per schema object (``V1beta1InferenceService``,
``V1alpha1ServingRuntime``, Kubernetes' own ``V1Container``...), each with ``openapi_types``
(field -> type) and ``attribute_map`` (field -> JSON key). A document is walked against them: an
unknown key, a value of the wrong type or a missing required field is an error naming its path.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from collections.abc import Mapping
from typing import Any

from duh.errors import ConfigError, MissingDependencyError

__all__ = ["validate"]

_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
}
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "object": (object,),
    "datetime": (str,), "bytes": (str,),
    "ResourceQuantity": (str, int, float),  # "500m", "1Gi", 2
}
# Both spellings occur: kserve's models write list[X]/dict(str, X), Kubernetes' List[X]/Dict[..].
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\])$")


def _kserve_models() -> Any:
    """``kserve.models`` without ``kserve/__init__.py``, which imports kserve's whole server.

    That import registers kserve's gRPC protocol (package ``inference``) in protobuf's default
    pool, where it collides with Triton's, which ``duh serve`` and tritonclient load: one process
    could not hold both. The model classes need only ``kserve.configuration`` and ``six``.
    """
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("kserve")
        package = types.ModuleType("kserve")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


def _model_class(name: str) -> Any:
    import kubernetes.client.models

    for module in (_kserve_models(), kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(name)  # an internal bug: a type the models name but do not define


def _check(value: Any, kind: str, where: str) -> None:
    if kind in _PRIMITIVES:
        if (kind == "int" and isinstance(value, bool)) or not isinstance(value, _PRIMITIVES[kind]):
            raise ConfigError(f"{where}: {value!r} is not of type {kind}")
        return
    if match := _LIST.match(kind):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {match[1]}, got {value!r}")
        for i, item in enumerate(value):
            _check(item, match[1], f"{where}[{i}]")
        return
    if match := _DICT.match(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        for key, item in value.items():
            _check(item, match[2] or match[4], f"{where}.{key}")
        return
    cls = _model_class(kind)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object ({kind}), got {value!r}")
    fields = {cls.attribute_map[attr]: attr for attr in cls.openapi_types}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)} for {kind}; "
            f"known: {', '.join(sorted(fields))}"
        )
    for key, item in value.items():
        _check(item, cls.openapi_types[fields[key]], f"{where}.{key}")
    # The generated constructors enforce the schema's required fields (and enums).
    try:
        cls(**{fields[k]: _shallow(v) for k, v in value.items()})
    except ValueError as exc:  # pydantic's ValidationError (Kubernetes' models) is one too
        text = " ".join(str(exc).split("For further information")[0].split())
        raise ConfigError(f"{where}: {text}") from None


def _shallow(value: Any) -> Any:
    """Nested objects stand in as plain values: the constructor checks presence, not nesting."""
    return value


def validate(document: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless ``document`` fits KServe's schema for its kind."""
    try:
        _kserve_models()
    except ImportError:
        raise MissingDependencyError("kserve", "kserve", "validating KServe resources") from None
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in _KINDS:
        raise ConfigError(f"not a KServe resource duh writes: apiVersion/kind {key}")
    _check(dict(document), _KINDS[key], str(document.get("kind")))  # type: ignore[arg-type]
