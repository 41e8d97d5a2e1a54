"""Intel Neural Compressor (3.x) on a PyTorch module, before its export to ONNX.

``static``: INT8 through PT2E (``neural_compressor.torch.export`` then ``prepare``/``convert``
with a static config), calibrated on the build's --calib samples; the converted graph holds
quantize/dequantize pairs that the ONNX exporter writes as QuantizeLinear/DequantizeLinear.
``rtn``: weight-only round-to-nearest INT8 of the Linear layers. ``smoothquant`` needs Intel
Extension for PyTorch, which INC 3.x runs it on. With ``max_drop``, INC's ``autotune`` tries
its configurations until the top-1 agreement with the float module on the check inputs loses
at most that share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from duh.errors import ConfigError, MissingDependencyError
from duh.frontends._base import QuantizeRequest

__all__ = ["RECIPES", "quantize_module"]

log = logging.getLogger(__name__)

RECIPES = ("static", "smoothquant", "rtn")


def _inc() -> Any:
    try:
        import neural_compressor.torch.quantization as inc
    except ImportError:
        raise MissingDependencyError(
            "neural-compressor-pt", "inc", "--quantizer inc (Intel Neural Compressor)"
        ) from None
    return inc


def _tensors(feed: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names)


def _top1(module: Any, feeds: Sequence[tuple[Any, ...]]) -> np.ndarray:
    import torch

    with torch.no_grad():
        outs = [module(*f) for f in feeds]
    first = [o if isinstance(o, torch.Tensor) else o[0] for o in outs]
    return np.concatenate([o.argmax(dim=-1).reshape(-1).numpy() for o in first])


def quantize_module(
    module: Any,
    example: tuple[Any, ...],
    names: Sequence[str],
    axes: Mapping[str, tuple[int, ...]],
    request: QuantizeRequest,
) -> tuple[Any, dict[str, Any]]:
    """Quantize ``module`` with INC's ``request.recipe``; returns (module, settings recorded)."""
    if request.recipe not in RECIPES:
        raise ConfigError(
            f"INC recipe {request.recipe!r} is unknown; the recipes are {', '.join(RECIPES)}"
        )
    if not request.feeds:
        raise ConfigError("--quantizer inc needs calibration samples (--calib PATH)")
    inc = _inc()
    from importlib import metadata

    import torch

    calib = [_tensors(f, names) for f in request.feeds]
    settings: dict[str, Any] = {
        "name": "inc",
        "version": metadata.version("neural-compressor-pt"),
        "recipe": request.recipe,
        "calibration_samples": len(calib),
    }
    if request.recipe == "smoothquant":
        try:
            import intel_extension_for_pytorch  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "intel-extension-for-pytorch", "inc", "INC's SmoothQuant (it runs on IPEX)"
            ) from None
    float_module = module

    def run_fn(prepared: Any) -> None:
        with torch.no_grad():
            for feed in calib:
                prepared(*feed)

    def exported() -> Any:
        """The module as INC's flow takes it: PT2E's exported graph (RTN: the module)."""
        if request.recipe == "rtn":
            return _copy(float_module)
        from neural_compressor.torch.export import export

        dims = tuple({a: torch.export.Dim.DYNAMIC for a in axes.get(n, ())} or None for n in names)
        return export(
            _copy(float_module), example_inputs=example, dynamic_shapes=dims if axes else None
        )

    def make(config: Any) -> Any:
        if request.recipe == "rtn":
            return inc.convert(inc.prepare(exported(), config))
        prepared = inc.prepare(exported(), config)
        run_fn(prepared)
        return inc.convert(prepared)

    config = (
        inc.RTNConfig(dtype="int", bits=8)
        if request.recipe == "rtn"
        else (inc.get_default_static_config())
    )
    if request.max_drop is None or not request.eval_feeds:
        return _checked(make(config), request.recipe), settings
    checks = [_tensors(f, names) for f in request.eval_feeds]
    wanted = _top1(float_module, checks)

    def eval_fn(candidate: Any) -> float:
        return float(np.mean(_top1(candidate, checks) == wanted))

    tune = inc.TuningConfig(config_set=[config], tolerable_loss=request.max_drop, max_trials=3)
    if request.recipe == "rtn":
        best = inc.autotune(exported(), tune, eval_fn=eval_fn)
    else:
        best = inc.autotune(exported(), tune, eval_fn=eval_fn, run_fn=run_fn)
    settings["autotune"] = {"tolerable_loss": request.max_drop, "metric": "top-1 agreement"}
    return _checked(best, request.recipe), settings


def _checked(quantized: Any, recipe: str) -> Any:
    """``quantized``, unless INC's static recipe inserted no quantize op (nothing matched)."""
    if recipe != "static":
        return quantized
    graph = getattr(quantized, "graph", None)
    nodes = [] if graph is None else list(graph.nodes)
    if not any("quantize_per" in str(n.target) for n in nodes):
        raise ConfigError(
            "neural-compressor found nothing to quantize: its PT2E quantizer matches layers by "
            "the module they came from, which a loaded torch.export program (.pt2) no longer "
            "records; build from module.py:factory with --quantizer inc, or leave --quantizer "
            "out (duh quantizes the exported ONNX itself)"
        )
    return quantized


def _copy(module: Any) -> Any:
    import copy

    return copy.deepcopy(module)
