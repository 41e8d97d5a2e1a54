"""The runtime shim: ``load(artifact)`` gives a ``Session`` with one API for every engine.

The runtime never imports the compiler: serving and benchmarking depend on this package only.
"""

from __future__ import annotations

from duh.runtime._data import (
    DATA_SUFFIXES,
    ValueRange,
    batch_axis,
    read_samples,
    synthetic_feed,
    synthetic_shapes,
)
from duh.runtime._datastats import (
    DATA_STATS_NAME,
    DataStats,
    InputStats,
    bin_counts,
    feature_axis,
    feature_rows,
    read_data_stats,
)
from duh.runtime._engine import Engine, EngineOptions, OpTiming
from duh.runtime._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    check_host,
    hash_files,
    read_manifest,
    sha256_file,
    verify_files,
)
from duh.runtime._session import Session, load
from duh.runtime._signature import Dim, TensorSpec, check_feed, dtype_name
from duh.runtime._signing import (
    check_signing_key,
    generate_keypair,
    sign_artifact,
    verify_signature,
)
from duh.runtime._timing import Timings, measure_interleaved

__all__ = [
    "DATA_STATS_NAME",
    "DATA_SUFFIXES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "DataStats",
    "Dim",
    "Engine",
    "EngineOptions",
    "InputStats",
    "Manifest",
    "OpTiming",
    "Session",
    "TensorSpec",
    "Timings",
    "ValueRange",
    "batch_axis",
    "bin_counts",
    "check_feed",
    "check_host",
    "check_signing_key",
    "dtype_name",
    "feature_axis",
    "feature_rows",
    "generate_keypair",
    "hash_files",
    "load",
    "measure_interleaved",
    "read_data_stats",
    "read_manifest",
    "read_samples",
    "sha256_file",
    "sign_artifact",
    "synthetic_feed",
    "synthetic_shapes",
    "verify_files",
    "verify_signature",
]
