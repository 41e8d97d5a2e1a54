"""Golden outputs: one subject's outputs over a data set, recorded once and compared against later.

A golden file is an ``.npz``: ``__duh_golden__`` holds a JSON header (the format, the subject that
recorded it, its tolerance, the data it ran on and its digest, the input and output signature),
``output_I`` holds output ``I`` of every feed stacked on a new first axis, or ``output_I_K`` one
array per feed ``K`` where the feeds' shapes differ. Indices keep any output name safe as a key.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duh.compare._metrics import Tolerance
from duh.errors import ConfigError
from duh.runtime import TensorSpec

__all__ = ["GOLDEN_FORMAT", "Golden", "read_golden", "write_golden"]

GOLDEN_FORMAT = "duh.golden/1"
_HEADER = "__duh_golden__"


@dataclass(frozen=True, slots=True)
class Golden:
    """Recorded outputs: ``outputs[k][name]`` is output ``name`` of feed ``k``."""

    subject: Mapping[str, Any]
    tolerance: Tolerance
    data: Mapping[str, Any]
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    outputs: tuple[dict[str, np.ndarray], ...]


def write_golden(path: Path, golden: Golden) -> None:
    """Write ``golden`` to ``path`` (an .npz) atomically: a failed write leaves nothing."""
    if path.suffix != ".npz":
        raise ConfigError(f"--save-outputs {str(path)!r}: name the golden file NAME.npz")
    if not path.parent.is_dir():
        raise ConfigError(
            f"--save-outputs {str(path)!r}: directory {str(path.parent)!r} does not exist"
        )
    arrays: dict[str, np.ndarray] = {}
    layout = {}
    for i, name in enumerate(golden.output_names):
        # Strings as numpy text: object arrays would need pickling to be read back.
        per_feed = [_storable(np.asarray(out[name])) for out in golden.outputs]
        if len({a.shape for a in per_feed}) == 1:
            arrays[f"output_{i}"] = np.stack(per_feed)
            layout[name] = "stacked"
        else:
            arrays.update({f"output_{i}_{k}": a for k, a in enumerate(per_feed)})
            layout[name] = "per_feed"
    header = {
        "format": GOLDEN_FORMAT,
        "subject": dict(golden.subject),
        "tolerance": golden.tolerance.to_json(),
        "data": dict(golden.data),
        "feeds": len(golden.outputs),
        "inputs": [s.to_json() for s in golden.inputs],
        "outputs": [{"name": n, "layout": layout[n]} for n in golden.output_names],
    }
    arrays[_HEADER] = np.array(json.dumps(header))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            savez: Any = np.savez_compressed  # its stubs read **arrays as allow_pickle
            savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _storable(array: np.ndarray) -> np.ndarray:
    return array.astype(str) if array.dtype.kind == "O" else array


def _bad(path: Path, what: str) -> ConfigError:
    return ConfigError(
        f"--load-outputs {str(path)!r} {what}; record golden outputs with "
        "`duh compare SUBJECT --data FILE --save-outputs NAME.npz`"
    )


def read_golden(path: Path) -> Golden:
    """Read a golden file ``write_golden`` wrote; each way it can be wrong is a ``ConfigError``."""
    if not path.is_file():
        raise _bad(path, "does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _bad(path, f"is not a readable .npz ({exc})") from None
    if _HEADER not in arrays:
        raise _bad(path, "is not a duh golden file (no header)")
    try:
        header = json.loads(str(arrays[_HEADER]))
        if header.get("format") != GOLDEN_FORMAT:
            raise _bad(path, f"has format {header.get('format')!r}, this duh reads {GOLDEN_FORMAT}")
        feeds = int(header["feeds"])
        names = tuple(str(o["name"]) for o in header["outputs"])
        per_name: dict[str, Sequence[np.ndarray]] = {}
        for i, out in enumerate(header["outputs"]):
            if out["layout"] == "stacked":
                stacked = arrays[f"output_{i}"]
                if len(stacked) != feeds:
                    raise _bad(path, f"holds {len(stacked)} feeds of {out['name']!r}, not {feeds}")
                per_name[out["name"]] = list(stacked)
            else:
                per_name[out["name"]] = [arrays[f"output_{i}_{k}"] for k in range(feeds)]
        return Golden(
            subject=dict(header["subject"]),
            tolerance=Tolerance.from_json(header["tolerance"]),
            data=dict(header["data"]),
            inputs=tuple(TensorSpec.from_json(s) for s in header["inputs"]),
            output_names=names,
            outputs=tuple({n: per_name[n][k] for n in names} for k in range(feeds)),
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise _bad(path, f"is malformed (missing or wrong field {exc})") from None
