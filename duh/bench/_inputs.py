"""What the benchmark feeds: seeded synthetic inputs, real samples, shapes and batches.

A workload is one configuration measured on its own row: a batch size, a set of input shapes
(``--shape``, repeatable for a mix of shapes on dynamic models), and the feeds cycled through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from duh.errors import ConfigError, InputError
from duh.runtime import TensorSpec, synthetic_feed

__all__ = [
    "ShapeSet",
    "Workload",
    "batch_samples",
    "concrete_shape",
    "group_shapes",
    "make_workloads",
]

log = logging.getLogger(__name__)

ShapeSet = Mapping[str, tuple[int, ...]]
# Real samples cycled through per configuration at most; distinct synthetic feeds stay within a
# memory budget.
_MAX_DATA_FEEDS = 32
_FEED_BUDGET_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Workload:
    """One measured configuration: a label, its feeds, and the samples each feed carries."""

    label: str
    feeds: tuple[dict[str, np.ndarray], ...]
    batch: float
    shapes: tuple[dict[str, tuple[int, ...]], ...] = field(default_factory=tuple)

    def shape_text(self) -> str:
        """The shapes as ``name=1x3x224x224`` (several sets joined by ``|``)."""
        return " | ".join(
            ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s.items()) for s in self.shapes
        )


def group_shapes(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> list[dict[str, tuple[int, ...]]]:
    """Turn repeated ``--shape name=dims`` options into shape sets.

    Naming an input N times makes N sets, taken in order; an input named once applies to every
    set. ``x=1x64 --shape x=4x64`` gives two sets; ``a=1x4 b=1x4 a=2x4 b=2x4`` gives two.
    """
    by_name: dict[str, list[tuple[int, ...]]] = {}
    for name, dims in shapes:
        by_name.setdefault(name, []).append(tuple(dims))
    counts = {len(v) for v in by_name.values() if len(v) > 1}
    if len(counts) > 1:
        detail = ", ".join(f"{n} {len(v)}x" for n, v in by_name.items())
        raise ConfigError(
            f"--shape names inputs different numbers of times ({detail}); give every repeated "
            "input the same number of shapes, one per shape set"
        )
    sets = max(counts, default=1)
    return [
        {name: dims[i] if len(dims) > 1 else dims[0] for name, dims in by_name.items()}
        for i in range(sets if by_name else 0)
    ]


def _check_shape(spec: TensorSpec, dims: tuple[int, ...]) -> None:
    text = "x".join(map(str, dims))
    if len(dims) != len(spec.shape):
        raise ConfigError(
            f"--shape {spec.name}={text} has rank {len(dims)}, but input {spec.name!r} is "
            f"{spec.shape_text()} (rank {len(spec.shape)}); give {len(spec.shape)} dimensions"
        )
    for axis, (size, dim) in enumerate(zip(dims, spec.shape, strict=True)):
        if size <= 0:
            raise ConfigError(f"--shape {spec.name}={text}: axis {axis} must be positive")
        if isinstance(dim, int) and size != dim:
            raise ConfigError(
                f"--shape {spec.name}={text} sets axis {axis} to {size}, but input {spec.name!r} "
                f"is fixed at {spec.shape_text()}; only its dynamic axes can change"
            )


def concrete_shape(spec: TensorSpec, shapes: ShapeSet, batch: int | None) -> tuple[int, ...]:
    """The shape to feed ``spec``: the given one (its dynamic first axis replaced by ``batch``
    when set), else fixed dims kept, a dynamic first axis = ``batch`` (default 1), others 1."""
    if spec.name in shapes:
        dims = tuple(shapes[spec.name])
        if batch is not None and dims and not isinstance(spec.shape[0], int):
            dims = (batch, *dims[1:])
        return dims
    out = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            out.append(dim)
        elif axis == 0:
            out.append(batch or 1)
        else:
            log.warning(
                "input %r has dynamic axis %d (%s): feeding 1; set it with --shape %s=...",
                spec.name,
                axis,
                dim or "?",
                spec.name,
            )
            out.append(1)
    return tuple(out)


def _check_batch(specs: Sequence[TensorSpec], batch: int) -> None:
    if batch < 1:
        raise ConfigError(f"--batch must be positive, got {batch}")
    if batch == 1:
        return
    fixed = [s for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] != batch]
    if fixed:
        spec = fixed[0]
        raise ConfigError(
            f"--batch {batch} needs a dynamic first axis, but input {spec.name!r} is fixed at "
            f"{spec.shape_text()}; benchmark with --batch {spec.shape[0]} or export the model "
            "with a dynamic batch axis"
        )


def batch_samples(
    samples: Sequence[Mapping[str, np.ndarray]], batch: int, count: int
) -> list[dict[str, np.ndarray]]:
    """``count`` feeds of ``batch`` consecutive samples each (cycling), stacked on axis 0."""
    feeds = []
    for i in range(count):
        picked = [samples[(i * batch + j) % len(samples)] for j in range(batch)]
        try:
            feeds.append({k: np.concatenate([s[k] for s in picked]) for k in picked[0]})
        except ValueError as exc:
            raise InputError(
                f"cannot stack {batch} data samples into one batch ({exc}); the samples' shapes "
                "differ: use --batch 1"
            ) from None
    return feeds


def _feed_count(specs: Sequence[TensorSpec], shapes: ShapeSet, wanted: int) -> int:
    size = sum(
        int(np.prod(shapes[s.name])) * (np.dtype(s.dtype).itemsize if s.dtype != "object" else 8)
        for s in specs
    )
    return max(1, min(wanted, _FEED_BUDGET_BYTES // max(size, 1)))


def _one(
    specs: Sequence[TensorSpec],
    shape_set: ShapeSet,
    batch: int | None,
    seed: int,
    samples: Sequence[Mapping[str, np.ndarray]] | None,
    label: str,
    feeds_wanted: int,
) -> Workload:
    if samples is not None:
        size = batch or 1
        count = max(1, min(_MAX_DATA_FEEDS, len(samples) // size))
        stacked = batch_samples(samples, size, count)
        shapes = {k: tuple(v.shape) for k, v in stacked[0].items()}
        return Workload(label, tuple(stacked), float(size), (shapes,))
    shapes = {s.name: concrete_shape(s, shape_set, batch) for s in specs}
    rng = np.random.default_rng(seed)
    count = _feed_count(specs, shapes, feeds_wanted)
    feeds = tuple(synthetic_feed(specs, shapes, rng) for _ in range(count))
    lead = next((d[0] for d in shapes.values() if d), 1)
    return Workload(label, feeds, float(lead), (shapes,))


def make_workloads(
    specs: Sequence[TensorSpec],
    shape_sets: Sequence[ShapeSet],
    batches: Sequence[int | None],
    seed: int = 0,
    samples: Sequence[Mapping[str, np.ndarray]] | None = None,
    feeds: int = 1,
) -> list[Workload]:
    """One workload per (batch, shape set); with several shape sets, a ``mix`` workload cycling
    through all of them follows each batch. ``None`` as a batch keeps the shapes as given.

    Synthetic workloads hold ``feeds`` distinct seeded feeds (one by default, as benchmark_app,
    perf_analyzer and trtexec use; more make the inputs miss the caches as real traffic does);
    real ``samples`` are batched and cycled, up to 32 feeds."""
    names = {s.name for s in specs}
    for shape_set in shape_sets:
        unknown = sorted(set(shape_set) - names)
        if unknown:
            raise ConfigError(
                f"--shape names {', '.join(map(repr, unknown))}, which is not an input of this "
                f"model; its inputs are {', '.join(f'{s.name}{s.shape_text()}' for s in specs)}"
            )
        for spec in specs:
            if spec.name in shape_set:
                _check_shape(spec, tuple(shape_set[spec.name]))
    if samples is not None and shape_sets:
        raise ConfigError("--shape and --data cannot be combined: real samples fix the shapes")
    out: list[Workload] = []
    for batch in batches:
        if batch is not None:
            _check_batch(specs, batch)
        prefix = f"batch {batch}" if batch is not None else ""
        sets = list(shape_sets) or [{}]
        rows = []
        for index, shape_set in enumerate(sets):
            label = prefix
            if shape_set:
                text = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shape_set.items())
                label = f"{prefix} {text}".strip()
            row = _one(specs, shape_set, batch, seed + index, samples, label, feeds)
            rows.append(
                row if label else Workload(f"batch {row.batch:g}", row.feeds, row.batch, row.shapes)
            )
        out.extend(rows)
        if len(rows) > 1:
            longest = max(len(r.feeds) for r in rows)
            mixed = tuple(r.feeds[i % len(r.feeds)] for i in range(longest) for r in rows)
            mean_batch = float(np.mean([r.batch for r in rows]))
            shapes = tuple(s for r in rows for s in r.shapes)
            out.append(Workload(f"{prefix} mix".strip(), mixed, mean_batch, shapes))
    return out
