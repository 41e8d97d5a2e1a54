"""PyTorch into ONNX: ``torch.export`` programs (.pt2), ``module.py:factory``, TorchScript (.pt).

Every form runs code when it is read: ``torch.export.load`` unpickles its weights and constants
(``torch.load(weights_only=False)``, ``pickle.loads``), a TorchScript or pickled module is
pickled, and ``module.py`` is Python. So each needs ``--trust-code``; a file is first checked for
its form (a readable zip archive, a Python file that defines the factory) without running
anything, so a truncated or foreign file gets its own error.

The export is ``torch.onnx.export(..., dynamo=True)`` (onnxscript); the TorchScript exporter is
the fallback only when that fails, and the manifest records which one ran.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import sys
import sysconfig
import traceback
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import ConfigError, MissingDependencyError, ModelError
from duh.frontends._base import Exported, Frontend, FrontendOptions, QuantizeRequest, frontend

__all__ = ["TORCH"]

log = logging.getLogger(__name__)

_FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_PROGRAM = (".pt2",)
_PICKLED = (".pt", ".pth", ".ts", ".pkl")


def _claims(path: str) -> bool:
    return bool(_FACTORY.match(path)) or Path(path).suffix.lower() in _PROGRAM + _PICKLED


@dataclass(frozen=True, slots=True)
class _Loaded:
    """A module ready to export: how it was read, its example inputs, its input names."""

    form: str  # "torch.export program", "module.py factory", "TorchScript", "pickled module"
    module: Any  # torch.nn.Module or torch.jit.ScriptModule
    example: tuple[Any, ...]  # torch tensors
    names: tuple[str, ...]
    # Axes the source itself keeps dynamic (a .pt2's symbolic dims), by input name.
    axes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "PyTorch models") from None
    return torch


def _refuse_untrusted(path: str, form: str, why: str, options: FrontendOptions) -> None:
    if not options.trust_code:
        raise ConfigError(
            f"{path} is a {form}: reading it runs code from the file ({why}); build it only if "
            "you trust where it came from, with --trust-code"
        )


def _zip_names(path: Path, form: str) -> list[str]:
    """The members of a zip archive (.pt2, TorchScript), or the error of a file that is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ModelError(
            f"{path.name} is not a readable {form} (not a zip archive); the file is truncated, "
            "corrupt or of another format: save it again"
        ) from None


def _factory_source(file: Path, name: str) -> None:
    """Check, without running it, that ``file`` is Python and defines ``name``."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (SyntaxError, ValueError) as exc:
        what = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ModelError(
            f"{file.name} is not a readable Python file ({type(exc).__name__}: {what}); the file "
            "is truncated or of another format"
        ) from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} | {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    if name not in defined:
        raise ModelError(
            f"{file.name} defines no {name!r} at its top level; name a function that returns "
            "(module, example_inputs), as module.py:factory"
        )


def _as_tuple(example: Any, torch: Any) -> tuple[Any, ...]:
    if isinstance(example, torch.Tensor):
        return (example,)
    if isinstance(example, list | tuple) and all(isinstance(t, torch.Tensor) for t in example):
        return tuple(example)
    raise ModelError(
        "the factory's example_inputs must be a tensor or a tuple of tensors (one per input of "
        f"forward), got {type(example).__name__}"
    )


def _forward_names(module: Any, count: int) -> tuple[str, ...]:
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    if hasattr(module.forward, "schema"):  # TorchScript: the schema's arguments after self
        names = [a.name for a in module.forward.schema.arguments[1:]]
    names = names[:count]
    return tuple(names) if len(names) == count else tuple(f"input_{i}" for i in range(count))


def _shaped_example(
    names: Sequence[str], options: FrontendOptions, path: str, torch: Any
) -> tuple[Any, ...]:
    """Example inputs from --shape (float32), for forms that carry none."""
    shapes = {n: tuple(s) for n, s in options.shapes.items()}
    shapes.update({n: tuple(r[1]) for n, r in options.shape_ranges.items()})
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ConfigError(
            f"{path} carries no example inputs: give each input's shape, "
            + " ".join(f"--shape {n}=1x3x224x224" for n in missing)
        )
    rng = np.random.default_rng(0)
    return tuple(torch.from_numpy(rng.standard_normal(shapes[n]).astype(np.float32)) for n in names)


def _load(path: str, options: FrontendOptions) -> _Loaded:
    factory = _FACTORY.match(path)
    file = Path(factory.group("file") if factory else path)
    if not file.is_file():
        raise ModelError(f"model file {str(file)!r} does not exist; check the path")
    if factory:
        _factory_source(file, factory.group("name"))
        _refuse_untrusted(path, "Python module", "module.py is imported and run", options)
        torch = _torch()
        return _from_factory(file, factory.group("name"), torch)
    suffix = file.suffix.lower()
    if suffix in _PROGRAM:
        _zip_names(file, "torch.export program (.pt2)")
        _refuse_untrusted(
            path, "torch.export program", "torch.export.load unpickles weights and constants",
            options,
        )  # fmt: skip
        torch = _torch()
        try:
            program = torch.export.load(str(file))
        except (RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelError(
                f"{file.name} is not a torch.export program torch {torch.__version__} reads "
                f"({_first_line(exc)}); save it again with torch.export.save"
            ) from None
        args = program.example_inputs[0] if program.example_inputs else None
        names = tuple(
            s.arg.name for s in program.graph_signature.input_specs
            if s.kind.name == "USER_INPUT"
        )  # fmt: skip
        example = _as_tuple(args, torch) if args else _shaped_example(names, options, path, torch)
        return _Loaded(
            "torch.export program", program.module(), example, names, _symbolic(program, names)
        )
    names_in_zip = _zip_names(file, "TorchScript or torch.save file")
    torchscript = any(n.endswith("/constants.pkl") or "/code/" in n for n in names_in_zip)
    form = "TorchScript module" if torchscript else "pickled torch module"
    _refuse_untrusted(path, form, "it is unpickled", options)
    torch = _torch()
    try:
        module = (
            torch.jit.load(str(file)) if torchscript else torch.load(str(file), weights_only=False)
        )
    except (RuntimeError, EOFError, ValueError, AttributeError, ModuleNotFoundError) as exc:
        raise ModelError(f"{file.name} cannot be loaded by torch ({_first_line(exc)})") from None
    if not isinstance(module, torch.nn.Module | torch.jit.ScriptModule):
        raise ModelError(
            f"{file.name} holds a {type(module).__name__}, not a module; save the whole module "
            "(torch.save(model) or torch.jit.save) or use module.py:factory with the weights"
        )
    count = len(options.shapes) + len(options.shape_ranges) or 1
    names = _forward_names(module, count)
    return _Loaded(form, module, _shaped_example(names, options, path, torch), names)


def _symbolic(program: Any, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The axes of each user input that a torch.export program keeps symbolic."""
    import torch

    out = {}
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for name in names:
        value = by_name[name].meta.get("val") if name in by_name else None
        shape = getattr(value, "shape", ())
        axes = tuple(i for i, d in enumerate(shape) if isinstance(d, torch.SymInt))
        if axes:
            out[name] = axes
    return out


def _from_factory(file: Path, name: str, torch: Any) -> _Loaded:
    spec = importlib.util.spec_from_file_location(f"_duh_model_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent))  # module.py may import its neighbours
    try:
        spec.loader.exec_module(code)
        made = getattr(code, name)()
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise ModelError(
            f"{file.name}:{name}() raised {_user_error(exc)}; fix it (run the factory in Python "
            "for the whole traceback)"
        ) from None
    finally:
        sys.path.remove(str(file.parent))
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise ModelError(
            f"{file.name}:{name}() must return (module, example_inputs), got {type(made).__name__}"
        )
    module, example = made
    example = _as_tuple(example, torch)
    return _Loaded(
        "module.py factory", module.eval(), example, _forward_names(module, len(example))
    )


def _user_error(exc: BaseException) -> str:
    """``NameError: name 'x' is not defined (at model.py:12)``: the error and the innermost
    frame outside duh and torch, where the user's code went wrong."""
    paths = sysconfig.get_paths()
    libraries = {Path(paths[k]).resolve() for k in ("stdlib", "purelib", "platlib")}
    libraries.add(Path(__file__).resolve().parents[1])  # duh itself, installed or editable
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        file = Path(frame.filename).resolve()
        if any(file.is_relative_to(lib) for lib in libraries):
            continue
        where = f" (at {file.name}:{frame.lineno})"
    return f"{type(exc).__name__}: {_first_line(exc)}{where}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dynamic_axes(loaded: _Loaded, options: FrontendOptions) -> dict[str, tuple[int, ...]]:
    axes: dict[str, set[int]] = {n: set(a) for n, a in loaded.axes.items()}
    for name, given in options.dynamic.items():
        axes.setdefault(name, set()).update(given)
    for name, (low, _opt, high) in options.shape_ranges.items():
        axes.setdefault(name, set()).update(
            i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b
        )
    unknown = sorted(set(axes) - set(loaded.names))
    if unknown:
        raise ConfigError(
            f"--dynamic/--shape name input {unknown[0]!r}, but the model's inputs are "
            f"{', '.join(loaded.names)}; use one of those names"
        )
    return {n: tuple(sorted(a)) for n, a in axes.items() if a}


def _widen(
    example: tuple[Any, ...], names: Sequence[str], axes: Mapping[str, tuple[int, ...]], torch: Any
) -> tuple[Any, ...]:
    """Example inputs with size 2 or more on each dynamic axis (torch.export fixes a size 1)."""
    out = []
    for name, tensor in zip(names, example, strict=True):
        for axis in axes.get(name, ()):
            if tensor.shape[axis] == 1:
                tensor = torch.cat([tensor, tensor], dim=axis)
        out.append(tensor)
    return tuple(out)


def _flat_outputs(value: Any, torch: Any) -> list[Any]:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _to_onnx(
    module: Any,
    example: tuple[Any, ...],
    names: Sequence[str],
    outputs: Sequence[str],
    axes: Mapping[str, tuple[int, ...]],
    options: FrontendOptions,
    torch: Any,
) -> tuple[onnx.ModelProto, str]:
    """Export with the dynamo exporter, else the TorchScript one; returns (model, exporter)."""
    dims = tuple({a: torch.export.Dim.DYNAMIC for a in axes.get(n, ())} or None for n in names)
    common = {"input_names": list(names), "output_names": list(outputs),
              "opset_version": options.opset}  # fmt: skip
    scripted = isinstance(module, torch.jit.ScriptModule)
    if not scripted:
        try:
            program = torch.onnx.export(
                module, example, dynamo=True, dynamic_shapes=dims if axes else None,
                verbose=False, **common,
            )  # fmt: skip
            assert program is not None
            return program.model_proto, "dynamo"
        except torch.onnx.OnnxExporterError as exc:
            log.warning(
                "torch.onnx dynamo export failed (%s); trying the TorchScript exporter",
                _first_line(exc),
            )
    import io

    buffer = io.BytesIO()
    dynamic = {n: {a: f"{n}_{a}" for a in axes[n]} for n in axes}
    try:
        torch.onnx.export(
            module, example, buffer, dynamo=False, dynamic_axes=dynamic or None, **common
        )
    except (torch.onnx.OnnxExporterError, RuntimeError) as exc:
        raise ModelError(f"torch.onnx cannot export the module: {_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue()), "torchscript"


def _reference(module: Any, names: Sequence[str], outputs: Sequence[str], torch: Any) -> Any:
    def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            got = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
        return {o: t.numpy() for o, t in zip(outputs, _flat_outputs(got, torch), strict=True)}

    return run


def _export(path: str, options: FrontendOptions) -> Exported:
    loaded = _load(path, options)
    torch = _torch()
    axes = _dynamic_axes(loaded, options)
    example = _widen(loaded.example, loaded.names, axes, torch)
    try:
        with torch.no_grad():
            flat = _flat_outputs(loaded.module(*example), torch)
    except Exception as exc:  # noqa: BLE001 - the module's forward may raise anything
        raise ModelError(
            f"the module's forward fails on its example inputs ({_user_error(exc)}); give "
            "example inputs it takes (module.py:factory, or --shape NAME=DIMS)"
        ) from None
    outputs = ("output",) if len(flat) == 1 else tuple(f"output_{i}" for i in range(len(flat)))
    model, exporter = _to_onnx(loaded.module, example, loaded.names, outputs, axes, options, torch)
    record = {
        "frontend": "torch",
        "version": torch.__version__,
        "form": loaded.form,
        "exporter": exporter,
        "onnxscript": _version("onnxscript"),
        "dynamic_axes": {n: list(a) for n, a in axes.items()},
        "opset": options.opset,
        "example_shapes": {n: list(t.shape) for n, t in zip(loaded.names, example, strict=True)},
    }
    exported = Exported(
        model,
        record,
        _reference(loaded.module, loaded.names, outputs, torch),
        {n: t.numpy() for n, t in zip(loaded.names, example, strict=True)},
    )
    if isinstance(loaded.module, torch.jit.ScriptModule):
        return exported

    def quantize(request: QuantizeRequest) -> Exported:
        from duh.frontends._inc import quantize_module

        quantized, settings = quantize_module(loaded.module, example, loaded.names, axes, request)
        qmodel, qexporter = _to_onnx(
            quantized, example, loaded.names, outputs, axes, options, torch
        )
        qrecord = {**record, "exporter": qexporter, "quantizer": settings}
        return replace(exported, model=qmodel, record=qrecord, quantize=None)

    return replace(exported, quantize=quantize)


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


TORCH = frontend(
    Frontend(
        name="torch",
        extra="torch",
        summary="PyTorch (.pt2 torch.export programs, module.py:factory, TorchScript .pt)",
        claims=_claims,
        export=_export,
    )
)
