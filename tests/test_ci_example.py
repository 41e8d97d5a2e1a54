"""The example CI workflow (examples/ci/): its duh steps, run here as GitHub Actions runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"


def _steps() -> list[tuple[str, str]]:
    """The workflow's ``run:`` steps that call duh or the example's scripts, in order."""
    jobs = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]
    steps = [s for job in jobs.values() for s in job["steps"] if "run" in s]
    return [
        (s.get("name", s["run"]), " ".join(s["run"].split()))
        for s in steps
        if s["run"].startswith(("duh ", "python examples/ci/"))
    ]


def test_the_workflow_builds_compares_and_gates() -> None:
    commands = [run for _, run in _steps()]
    assert any(c.startswith("duh build -c examples/ci/duh.toml") for c in commands)
    assert any(c.startswith("duh compare") and "--load-outputs" in c for c in commands)
    assert any("bench_gates.py" in c for c in commands)


def _compare_available(env: dict[str, str]) -> bool:
    done = subprocess.run(["duh", "compare", "--help"], env=env, capture_output=True, cwd=ROOT)
    return done.returncode == 0


def test_the_workflow_steps_pass_here(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "duh").exists():
        pytest.skip(f"no duh console script beside {sys.executable}")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DUH_CACHE_DIR": str(tmp_path / "cache"),
    }
    out = ROOT / "out" / "ci"
    shutil.rmtree(out, ignore_errors=True)
    compare = _compare_available(env)
    try:
        for name, command in _steps():
            if command.startswith("duh compare") and not compare:
                continue
            command = command.replace("python examples/ci/", f"{sys.executable} examples/ci/")
            done = subprocess.run(
                command, shell=True, env=env, cwd=ROOT, capture_output=True, text=True
            )
            assert done.returncode == 0, f"{name}: {done.stderr.strip()[-600:]}"
        assert (out / "digits.cpu.duh" / "manifest.json").is_file()
        assert (out / "digits.int8.duh" / "manifest.json").is_file()
        # A second build of the unchanged recipe reuses every artifact.
        done = subprocess.run(
            ["duh", "build", "-c", "examples/ci/duh.toml", "--json"],
            env=env, cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert [b["cached"] for b in json.loads(done.stdout)["builds"]] == [True, True]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_tripped_gate_fails_the_step(tmp_path: Path) -> None:
    recipe = tmp_path / "duh.toml"
    model = ROOT / "fixtures" / "digits_cnn.onnx"
    recipe.write_text(
        f'[models.digits]\nmodel = "{model}"\n'
        f'targets = [{{ target = "onnxruntime:cpu-fp32", output = "d.duh", '
        f'bench = {{ fail_if = ["p50_ms<100000"] }} }}]\n',
        encoding="utf-8",
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DUH_CACHE_DIR": str(tmp_path / "cache"),
    }
    build = subprocess.run(["duh", "build", "-c", str(recipe)], env=env, capture_output=True)
    assert build.returncode == 0, build.stderr
    gates = ROOT / "examples" / "ci" / "bench_gates.py"
    done = subprocess.run(
        [sys.executable, str(gates), str(recipe), "--window", "0.2", "--min-windows", "1", "--max-windows", "2"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 10, done.stderr
