"""ONNX's own backend test models (``simple`` and ``light``) built for ``cpu`` and run on their data.

Each case runs in a worker process (``benchmarks.conformance``), so that a hang or a crash is
recorded instead of taking the suite down. A case must end ``pass`` or ``refused`` with duh's
one-line error and an exit code of the README's table, never ``crash`` or ``timeout``; and a case
ONNX Runtime itself runs correctly must pass, unless EXPECTED_REFUSED names it with its reason.
``make conformance`` runs the whole corpus on every CPU target.
"""

from __future__ import annotations

import pytest

from benchmarks._conformance_corpus import Case, discover
from benchmarks.conformance import CEILING, run_case

TARGET = "cpu"
# Real-size CNNs whose weights are folded out of ConstantOfShape nodes: over a minute each on a
# loaded 2-core machine (VGG-19 ~3 min).
SLOW = {"light/light_bvlc_alexnet", "light/light_vgg19", "light/light_zfnet512"}
# Cases ORT passes on their shipped data that duh refuses for a stated reason (none today: the
# cases whose inputs hold sizes, such as Expand's target shape, pass with the shipped inputs
# given as --check-data, as duh's refusal asks).
EXPECTED_REFUSED: dict[str, str] = {}
EXIT_CODES = range(1, 10)  # DuhError .. MissingDependencyError, as in the README's table


def _params() -> list[object]:
    cases = discover(("simple", "light"))
    return [
        pytest.param(c, id=c.key, marks=[pytest.mark.slow] if c.key in SLOW else []) for c in cases
    ]


@pytest.mark.parametrize("case", _params())
def test_case_passes_or_is_refused_in_one_line(case: Case) -> None:
    records = run_case(case, [CEILING, TARGET], timeout=600.0 if case.key in SLOW else 240.0)
    ceiling, got = records[CEILING], records[TARGET]
    detail = str(got.get("detail", ""))[-1500:]
    assert got["status"] in ("pass", "refused", "mismatch"), f"{got['status']}: {detail}"
    if got["status"] == "refused":
        assert got["one_line"], f"refusal is not one line: {detail!r}"
        assert got["exit_code"] in EXIT_CODES, got
    if ceiling["status"] != "pass":
        return  # ONNX Runtime fails this case too: only "no crash, no hang" is asked of duh
    if case.key in EXPECTED_REFUSED:
        assert got["status"] == "refused", (
            f"now {got['status']}: drop it from EXPECTED_REFUSED ({EXPECTED_REFUSED[case.key]})"
        )
        return
    assert got["status"] == "pass", f"ONNX Runtime passes this case; duh: {got['status']}: {detail}"
