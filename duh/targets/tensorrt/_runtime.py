"""Running a serialized TensorRT engine: device buffers, one CUDA stream, one execution context.

CUDA memory and streams come from NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``), the
package TensorRT's own samples use. An execution context runs one inference at a time, so runs
from several threads take turns on a lock; buffers grow to the largest shape seen and are reused.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duh.errors import ArtifactError, InputError, MissingDependencyError, TargetError
from duh.runtime.contract import EngineOptions, OpTiming
from duh.targets._util import import_engine
from duh.targets.tensorrt._build import make_logger

__all__ = ["TensorRtEngine", "cuda_check", "cuda_runtime", "host_view"]

log = logging.getLogger(__name__)


def cuda_runtime() -> Any:
    """The CUDA runtime API of cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]  # cuda-python < 12.6
        except ImportError:
            raise MissingDependencyError(
                "cuda-python", "gpu", "CUDA buffers for TensorRT engines"
            ) from None
    return runtime


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python result ``(error, *values)``; a ``TargetError`` naming the error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        named = cudart.cudaGetErrorName(err)
        name = named[1].decode() if isinstance(named, tuple) else str(err)
        raise TargetError(f"CUDA failed {what}: {name}; check the GPU and its driver (nvidia-smi)")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def host_view(ptr: int, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """A numpy array over ``ptr`` (host memory duh allocated, e.g. with ``cudaMallocHost``)."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = (ctypes.c_uint8 * max(count * dtype.itemsize, 1)).from_address(ptr)
    return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=count).reshape(tuple(shape))


def _grow(
    cudart: Any, buffers: dict[str, tuple[int, int]], name: str, nbytes: int, *, pinned: bool
) -> int:
    """``name``'s buffer in ``buffers``, reallocated when it is smaller than ``nbytes``."""
    ptr, size = buffers.get(name, (0, 0))
    if size >= nbytes:
        return ptr
    if pinned:
        free, alloc = cudart.cudaFreeHost, cudart.cudaMallocHost
    else:
        free, alloc = cudart.cudaFree, cudart.cudaMalloc
    if ptr:
        cuda_check(cudart, free(ptr), "freeing memory")
        del buffers[name]
    where = "pinned host" if pinned else "device"
    ptr = int(cuda_check(cudart, alloc(nbytes), f"allocating {nbytes} bytes of {where} memory"))
    buffers[name] = (ptr, nbytes)
    return ptr


def _profiler(trt: Any) -> Any:
    class _LayerTimes(trt.IProfiler):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.totals: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            entry = self.totals.setdefault(layer_name, [0.0, 0])
            entry[0] += ms * 1000.0
            entry[1] += 1

    return _LayerTimes()


class TensorRtEngine:
    """A deserialized TensorRT engine behind the runtime's engine contract."""

    engine_name = "tensorrt"

    def __init__(
        self, path: Path, config: Mapping[str, Any], outputs: Sequence[str], options: EngineOptions
    ) -> None:
        trt = import_engine("tensorrt", "tensorrt", "gpu", "the tensorrt engine")
        cudart = cuda_runtime()
        self._trt, self._cudart = trt, cudart
        self._device = int(config.get("device", 0))
        self._select_device()
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if config.get("version_compatible"):
            # A version-compatible engine carries the lean runtime that built it, as host code.
            self._runtime.engine_host_code_allowed = True
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"TensorRT {trt.__version__} cannot load {path.name}: "
                f"{self._logger.last_error or 'no reason given'}; rebuild the artifact on this host"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise TargetError(
                "TensorRT could not create an execution context for the engine: "
                f"{self._logger.last_error or 'no reason given'} (is the GPU out of memory?)"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        have = set(names) - set(self._inputs)
        missing = [n for n in outputs if n not in have]
        if missing:
            raise ArtifactError(f"TensorRT engine lacks outputs {missing}; rebuild the artifact")
        self._outputs = list(outputs)
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._stream = cuda_check(cudart, cudart.cudaStreamCreate(), "creating a CUDA stream")
        self._buffers: dict[str, tuple[int, int]] = {}
        self._pinned: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._layer_times = None
        if options.profile:
            self._layer_times = _profiler(trt)
            self._context.profiler = self._layer_times

    def _select_device(self) -> None:
        # The current device is per thread: a server thread calling run() would otherwise
        # allocate and launch on GPU 0.
        cudart = self._cudart
        cuda_check(cudart, cudart.cudaSetDevice(self._device), f"selecting GPU {self._device}")

    def _buffer(self, name: str, nbytes: int) -> int:
        return _grow(self._cudart, self._buffers, name, nbytes, pinned=False)

    def _host(self, name: str, array_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A pinned (page-locked) host array for ``name``, reused across runs."""
        nbytes = max(int(np.prod(array_shape, dtype=np.int64)) * dtype.itemsize, 1)
        ptr = _grow(self._cudart, self._pinned, name, nbytes, pinned=True)
        return host_view(ptr, array_shape, dtype)

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        cudart = self._cudart
        cuda_check(
            cudart, cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "copying a tensor"
        )

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference (runs from several threads take turns)."""
        cudart = self._cudart
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            self._select_device()
            for name in self._inputs:
                array = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
                if not self._context.set_input_shape(name, array.shape):
                    raise InputError(
                        f"input {name!r} has shape {list(array.shape)}, outside the engine's "
                        f"optimization profile; rebuild with --shape {name}=MIN:OPT:MAX covering it"
                    )
                ptr = self._buffer(name, max(array.nbytes, 1))
                host = self._host(name, array.shape, array.dtype)
                np.copyto(host, array)  # pinned staging: DMA straight from page-locked memory
                self._copy(ptr, host.ctypes.data, array.nbytes, to_device)
                self._context.set_tensor_address(name, ptr)
            results: dict[str, np.ndarray] = {}
            for name in self._outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise TargetError(
                        f"output {name!r} has a data-dependent shape {list(shape)}, which duh's "
                        "TensorRT runtime does not support; build for onnxruntime:cuda instead"
                    )
                out = self._host(name, shape, self._dtypes[name])
                self._context.set_tensor_address(name, self._buffer(name, max(out.nbytes, 1)))
                results[name] = out
            if not self._context.execute_async_v3(int(self._stream)):
                raise TargetError(
                    "TensorRT failed to run the engine: "
                    f"{self._logger.last_error or 'no reason given'}"
                )
            for name, out in results.items():
                self._copy(out.ctypes.data, self._buffers[name][0], out.nbytes, to_host)
            cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream), "running the engine")
            # The pinned buffers are reused by the next run: hand back copies.
            return {name: out.copy() for name, out in results.items()}

    def op_profile(self) -> list[OpTiming]:
        """Per-layer times TensorRT reported, summed over every run so far."""
        if self._layer_times is None:
            raise TargetError("profiling was not enabled; load with EngineOptions(profile=True)")
        timings = [
            OpTiming(name, "layer", us, int(calls))
            for name, (us, calls) in self._layer_times.totals.items()
        ]
        return sorted(timings, key=lambda t: t.total_us, reverse=True)

    def close(self) -> None:
        """Free the device buffers and the stream, then the engine."""
        with self._lock:
            if self._stream is not None:
                self._select_device()
            for ptr, _size in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._buffers.clear()
            for ptr, _size in self._pinned.values():
                self._cudart.cudaFreeHost(ptr)
            self._pinned.clear()
            if self._stream is not None:
                self._cudart.cudaStreamDestroy(self._stream)
                self._stream = None
            self._context = None
            self._engine = None
