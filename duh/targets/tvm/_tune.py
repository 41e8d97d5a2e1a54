"""MetaSchedule tuning for TVM builds, with tuning records cached across builds.

Records are kept under the build cache, keyed by the model's hash, the target string, the TVM
version and whether weights are prepacked: a later build of the same model for the same target
reuses them without tuning again. One that asks for more trials than were run tunes only the
difference, starting from the cached records (the evolutionary search seeds its population with
the best schedules already measured). Progress is logged at INFO as trials complete; the CLI shows
the latest line on its status bar.

Weight prepacking (TVM's ``cpu_weight_prepack``, on by default): the convolution and matmul
weights are marked layout-free before tuning, so a schedule may choose the weight layout its loops
read contiguously; after tuning, the layout change is split out of each kernel and folded into the
constant weights at compile time, so it costs nothing at run time and the call signature stays the
same.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duh._cache import cache_key
from duh.errors import TargetError
from duh.targets._util import package_version
from duh.targets.tvm._host import LlvmTarget

__all__ = ["TuningResult", "apply_records", "build_without_intrinsics", "prepare", "tune"]

log = logging.getLogger(__name__)

_DB_FILES = ("database_workload.json", "database_tuning_record.json")
_META = "duh-tuning.json"


@dataclass(frozen=True, slots=True)
class TuningResult:
    """Where the tuning records are and how they were made."""

    records: Path
    trials: int
    tasks: int
    reused: bool
    seconds: float
    cost_model: str
    weight_prepack: bool = True
    resumed_from: int = 0

    def to_json(self) -> dict[str, object]:
        """The form recorded in the manifest."""
        return {
            "trials": self.trials,
            "tasks": self.tasks,
            "reused_cache": self.reused,
            "seconds": round(self.seconds, 2),
            "cost_model": self.cost_model,
            "weight_prepack": self.weight_prepack,
            "resumed_from": self.resumed_from,
            "cache_key": self.records.name,
        }


def build_without_intrinsics(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build minus its import of every tensor intrinsic.

    That import parses hundreds of TVMScript functions (about 25 s per fresh worker process, and
    the builder starts fresh workers for every batch); CPU float schedules never tensorize.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def prepare(mod: Any, target: Any, prepack: bool = True) -> Any:
    """Legalize and fuse the Relax module the way tuning sees it (tasks are its TIR functions);
    with ``prepack``, weights (constants) are marked layout-free for the schedules."""
    import tvm
    from tvm import relax

    passes = [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.get_pipeline("zero"),
    ]
    if prepack:
        passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _database(directory: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(
        path_workload=str(directory / _DB_FILES[0]),
        path_tuning_record=str(directory / _DB_FILES[1]),
        module_equality="structural",
    )


def apply_records(prepared: Any, target: Any, records: Path, prepack: bool = True) -> Any:
    """Replace the prepared module's TIR functions by their best tuned schedules; with
    ``prepack``, the weight layout changes those schedules chose are folded into the weights."""
    import tvm
    from tvm import relax

    with target, _database(records):
        mod = relax.transform.MetaScheduleApplyDatabase()(prepared)
        if prepack:
            mod = tvm.transform.Sequential(
                [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
            )(mod)
    return mod


def _progress_builder(inner: Any, total: int) -> Any:
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import PyBuilder

    @derived_object
    class _ProgressBuilder(PyBuilder):  # type: ignore[misc]
        """Builds through ``inner`` and logs how many trials are done."""

        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = inner.build(build_inputs)
            self.done += len(build_inputs)
            filled = min(20, round(20 * self.done / max(total, 1)))
            bar = "#" * filled + "-" * (20 - filled)
            log.info("TVM tuning [%s] %d/%d trials", bar, self.done, total)
            return list(results)

    return _ProgressBuilder()


def _strategy(per_iter: int) -> Any:
    """The evolutionary search, sized to the budget: MetaSchedule's default population of 512
    costs more to evolve than small budgets measure, so they get a smaller one."""
    from tvm.s_tir import meta_schedule as ms

    if per_iter >= 64:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(
        population_size=max(64, 4 * per_iter), init_min_unmeasured=16, genetic_num_iters=2
    )


def _contexts(extracted: list[Any], per_iter: int, cores: int) -> tuple[list[Any], list[float]]:
    """One tuning context per task, with the generic LLVM schedule rules.

    MetaSchedule's default rules for a CPU with VNNI or AMX add tensorized int8 rules whose
    intrinsics take a minute to import; duh's CPU kernels are float (TVM runs Q/DQ models in float),
    so the generic rules lose nothing.
    """
    from tvm.s_tir import meta_schedule as ms

    contexts, weights = [], []
    for seed, task in enumerate(extracted, start=1):
        if task.mod.attrs is not None and task.mod.attrs.get("tirx.is_scheduled", False):
            continue
        space = ms.space_generator.PostOrderApply(
            sch_rules=ms.ScheduleRule.create("llvm"),
            postprocs=ms.Postproc.create("llvm"),
            mutator_probs=ms.Mutator.create("llvm"),
        )
        context = ms.TuneContext(
            mod=task.dispatched[0],
            target=task.target,
            space_generator=space,
            search_strategy=_strategy(per_iter),
            task_name=task.task_name,
            rand_state=seed,
            num_threads=cores,
        )
        contexts.append(context.clone())
        weights.append(float(task.weight))
    return contexts, weights


def _cost_model() -> str:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (text or "0").split(".")[:3] if p.isdigit())


def check_tvm_ffi() -> None:
    """Refuse the apache-tvm / apache-tvm-ffi pair whose JSON serialization crashes the process.

    apache-tvm 0.27 with apache-tvm-ffi 0.1.15 segfaults in MetaSchedule (saving any integer
    expression to JSON, which tuning databases and tuning contexts do).
    """
    tvm_version, ffi_version = package_version("apache-tvm"), package_version("apache-tvm-ffi")
    if _version(tvm_version)[:2] == (0, 27) and _version(ffi_version) >= (0, 1, 15):
        raise TargetError(
            f"TVM tuning crashes with apache-tvm {tvm_version} and apache-tvm-ffi {ffi_version} "
            "(their JSON serialization does not match); pip install 'apache-tvm-ffi<0.1.15', "
            "or build without --tune-trials"
        )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def tune(
    prepared: Any,
    target: Any,
    llvm: LlvmTarget,
    model_sha256: str,
    trials: int,
    cache_root: Path,
    prepack: bool = True,
) -> TuningResult:
    """Tune ``prepared`` (see ``prepare``) for ``trials`` trials, or reuse cached records; with
    fewer cached trials than asked, tune the difference starting from them."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    parts = ("tvm-tuning", model_sha256, llvm.text(), tvm.__version__)
    key = cache_key(*parts, "prepack") if prepack else cache_key(*parts)
    records = cache_root / key
    meta = _read_meta(records / _META)
    cached = int(meta.get("trials", 0)) if all((records / f).is_file() for f in _DB_FILES) else 0
    if cached >= trials:
        log.info("TVM tuning: reusing %d cached trials (%s)", cached, key)
        return TuningResult(
            records,
            cached,
            int(meta.get("tasks", 0)),
            True,
            0.0,
            str(meta.get("cost_model", "")),
            prepack,
        )
    check_tvm_ffi()
    started = time.perf_counter()
    extracted = ms.relax_integration.extract_tasks(prepared, target)
    cost_model = _cost_model()
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tuning-", dir=cache_root) as work_name:
        work = Path(work_name)
        if cached:
            for name in _DB_FILES:
                shutil.copy2(records / name, work / name)
            log.info("TVM tuning: %d cached trials, tuning %d more", cached, trials - cached)
        new = trials - cached
        per_iter = max(4, min(64, new // max(len(extracted), 1)))
        contexts, weights = _contexts(extracted, per_iter, llvm.num_cores)
        if contexts:
            builder = ms.builder.LocalBuilder(
                f_build=build_without_intrinsics, max_workers=llvm.num_cores
            )
            log.info(
                "TVM tuning: %d tasks, %d trials (%s cost model)", len(contexts), new, cost_model
            )
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work),
                max_trials_global=new,
                max_trials_per_task=max(per_iter, math.ceil(2 * new / len(contexts))),
                num_trials_per_iter=per_iter,
                builder=_progress_builder(builder, new),
                cost_model=cost_model,
            )
        else:
            for name in _DB_FILES:
                (work / name).touch()
        seconds = time.perf_counter() - started
        records.mkdir(parents=True, exist_ok=True)
        for name in _DB_FILES:
            os.replace(work / name, records / name)
        (records / _META).write_text(
            json.dumps(
                {
                    "trials": trials,
                    "tasks": len(contexts),
                    "weight_prepack": prepack,
                    "cost_model": cost_model,
                    "target": llvm.to_json(),
                    "tvm_version": tvm.__version__,
                    "model_sha256": model_sha256,
                    "seconds": round(seconds, 2),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return TuningResult(records, trials, len(contexts), False, seconds, cost_model, prepack, cached)
