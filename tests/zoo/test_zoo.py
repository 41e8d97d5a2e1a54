"""The zoo of real trained models (fixtures/zoo_data.py), built end to end and checked on real data.

Each case is ``duh build`` through the CLI (with the model's check data where the CLI takes
``--check-data``; ``--calib`` for INT8), then the artifact loaded with ``duh.load`` and run on
the check data against ONNX Runtime running the source. ``cpu`` runs in the suite; the other
CPU targets take several minutes and run with ``DUH_ZOO=all`` (or ``python -m benchmarks.zoo``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.zoo import run_case
from fixtures.zoo_data import ZOO_MODELS
from tests._host import HAS_BF16

# Models duh refuses on purpose, and the words its one-line reason must hold.
REFUSED: dict[str, str] = {}
FULL = os.environ.get("DUH_ZOO") == "all"


@pytest.mark.parametrize("name", list(ZOO_MODELS))
def test_zoo_model_builds_for_cpu_and_matches_the_source(name: str, tmp_path: Path) -> None:
    case = run_case(name, "cpu", tmp_path)
    if name in REFUSED:
        assert case.status == "refused", case
        assert case.exit_code == 3 and REFUSED[name] in case.detail, case
        assert not (tmp_path / f"{name}.cpu.duh").exists()
    else:
        assert case.status == "pass", f"{name}: {case.status}: {case.detail}"


# Refusals seen on this host's engines (benchmarks.zoo, by duh's criteria): each must stay a
# one-line refusal with these words (or start passing), never a crash or a silent mismatch.
# (None now: the mel front end's cpu-int8, refused until the INT8 fallback measured each op
# by what leaving it out gains at the outputs, passes with its mel filterbank in float.)
KNOWN_REFUSALS: dict[tuple[str, str], str] = {}


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the zoo on every CPU target runs with DUH_ZOO=all")
@pytest.mark.parametrize("target", ["openvino:cpu-fp32", "cpu-bf16", "cpu-int8"])
@pytest.mark.parametrize("name", [n for n in ZOO_MODELS if n not in REFUSED])
def test_zoo_model_builds_for_target_and_matches_the_source(
    name: str, target: str, tmp_path: Path
) -> None:
    if target == "cpu-bf16" and not HAS_BF16:
        pytest.skip("the CPU has no AVX-512 BF16 or AMX-BF16: cpu-bf16 is refused on this host")
    case = run_case(name, target, tmp_path)
    known = KNOWN_REFUSALS.get((name, target))
    if known is not None and case.status == "refused":
        assert known in case.detail, case
    else:
        assert case.status == "pass", f"{name} {target}: {case.status}: {case.detail}"
    if case.status == "pass" and target.endswith("int8"):
        # an INT8 fallback's rescue keeps ops quantized: never an fp32 model under an INT8 name
        out = tmp_path / f"{name}.{target.replace(':', '_')}.duh"
        manifest = json.loads((out / "manifest.json").read_text())
        rescued = [
            p for p in manifest["passes"]
            if p["name"] == "quantize" and any("INT8 fallback" in n for n in p["notes"])
        ]  # fmt: skip
        assert all(p["nodes_after"] > p["nodes_before"] for p in rescued), rescued
