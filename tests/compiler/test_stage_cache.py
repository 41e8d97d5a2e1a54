"""The build cache: hits and misses as the manifest records them, reuse of a pipeline's prefix,
tampered entries rebuilt, concurrent builds, and byte-identical builds without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import duh
from duh.compiler import build
from duh.compiler.cache import StageCache

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIGITS, CALIB = FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_calib.npz"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DUH_CACHE_DIR", str(root))
    return root


def _lookups(manifest: duh.runtime.Manifest) -> list[tuple[str, bool]]:
    return [(e["stage"], e["hit"]) for e in manifest.build["cache"]["lookups"]]


def _int8(out: Path, **kwargs: object) -> duh.compiler.BuildResult:
    return build(DIGITS, "openvino:cpu-int8", out, calib=CALIB, calib_samples=64, **kwargs)  # type: ignore[arg-type]


def test_an_unchanged_rebuild_is_a_cache_hit_with_the_same_files(
    cache: Path, tmp_path: Path
) -> None:
    first = _int8(tmp_path / "a.duh")
    assert not first.cached and first.manifest is not None
    assert first.manifest.build["cache"]["artifact"] == "miss"
    second = _int8(tmp_path / "b.duh")
    assert second.cached and second.manifest is not None
    assert second.manifest.build["cache"]["artifact"] == "hit"
    assert _lookups(second.manifest) == [("inputs", True), ("artifact", True)]
    assert second.manifest.files == first.manifest.files
    assert duh.runtime.read_manifest(tmp_path / "b.duh").build["cache"]["artifact"] == "hit"
    session = duh.load(tmp_path / "b.duh")  # the copy verifies and runs
    session.close()


def test_changing_the_last_pass_reuses_every_stage_before_it(cache: Path, tmp_path: Path) -> None:
    _int8(tmp_path / "a.duh")
    changed = _int8(tmp_path / "b.duh", pass_options={"quantize": {"calibrator": "percentile"}})
    assert not changed.cached and changed.manifest is not None
    cached = {p["name"]: p["cached"] for p in changed.manifest.passes}
    assert cached.pop("quantize") is False
    assert cached and all(cached.values())
    assert changed.manifest.passes[-1]["config"]["calibrator"] == "percentile"


def test_an_engine_version_bump_invalidates_the_artifact_not_the_passes(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from duh.compiler import _cache_keys

    _int8(tmp_path / "a.duh")
    real = _cache_keys._version.__wrapped__

    def bumped(distributions: tuple[str, ...]) -> str:
        return "openvino==999.0" if distributions[0] == "openvino" else real(distributions)

    monkeypatch.setattr(_cache_keys, "_version", bumped)
    rebuilt = _int8(tmp_path / "b.duh")
    assert not rebuilt.cached and rebuilt.manifest is not None
    assert all(p["cached"] for p in rebuilt.manifest.passes)


def test_a_tampered_entry_is_detected_and_rebuilt(cache: Path, tmp_path: Path) -> None:
    first = _int8(tmp_path / "a.duh")
    assert first.manifest is not None
    store = StageCache(cache / "builds")
    [entry] = [e for e in store.entries() if e.kind == "artifact"]
    engine_file = next(p for p in entry.files_dir.iterdir() if p.name != "manifest.json")
    engine_file.write_bytes(engine_file.read_bytes()[:-16] + b"\0" * 16)
    tampered = duh.runtime.sha256_file(engine_file)
    second = _int8(tmp_path / "b.duh")
    assert not second.cached and second.manifest is not None
    notes = [e["note"] for e in second.manifest.build["cache"]["lookups"] if e["note"]]
    assert notes and "do not match their sha256" in notes[0]
    assert tampered not in second.manifest.files.values()  # rebuilt, not the tampered bytes
    assert second.manifest.checks["passed"]
    session = duh.load(tmp_path / "b.duh")
    session.close()
    third = _int8(tmp_path / "c.duh")  # the rebuilt entry is whole again
    assert third.cached


def test_no_cache_reads_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    result = _int8(tmp_path / "a.duh", cache=False)
    assert result.manifest is not None and result.manifest.build["cache"] == {"enabled": False}
    assert StageCache(cache / "builds").entries() == []
    assert not any((cache / "passes").rglob("*.json"))  # nor calibration ranges


_CHILD = """
import sys
from duh.compiler import build
r = build(sys.argv[1], "openvino:cpu-int8", sys.argv[2], calib=sys.argv[3], calib_samples=64)
print(r.cached)
"""


def test_two_concurrent_builds_share_one_cache(cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DUH_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(DIGITS), str(tmp_path / f"{i}.duh"), str(CALIB)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    a = json.loads((tmp_path / "0.duh" / "manifest.json").read_text())
    b = json.loads((tmp_path / "1.duh" / "manifest.json").read_text())
    assert a["files"] == b["files"]
    store = StageCache(cache / "builds")
    entries = store.entries()
    assert {e.kind for e in entries} == {"pass", "artifact", "inputs"}
    for entry in entries:  # every entry whole: none half-written by the race
        with store.lookup(entry.key, entry.kind) as found:
            assert found is not None
    assert not [p for p in (cache / "builds").iterdir() if p.name.startswith(".")]
    third = _int8(tmp_path / "2.duh")
    assert third.cached


@pytest.mark.parametrize(
    "target",
    [
        "openvino:cpu-fp32",
        "onnxruntime:cpu-int8",
        # the same two steps on the other engine: in `make test-slow`
        pytest.param("onnxruntime:cpu-fp32", marks=pytest.mark.slow),
        pytest.param("openvino:cpu-int8", marks=pytest.mark.slow),
    ],
)
def test_without_the_cache_a_rebuild_is_byte_identical(tmp_path: Path, target: str) -> None:
    # Each build in its own process, as CI runs them: OpenVINO numbers the nodes it makes from
    # a counter that lives as long as the process, so two conversions in one process differ in
    # the layer names of model.xml (the weights and the graph are the same).
    calib = ["--calib", str(CALIB)] if target.endswith("int8") else []
    manifests = []
    for i in range(2):
        out = tmp_path / f"{i}.duh"
        cmd = [sys.executable, "-m", "duh", "build", str(DIGITS), "-t", target, "-o", str(out)]
        done = subprocess.run(
            [*cmd, *calib, "--no-cache", "--json"], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        manifests.append(json.loads((out / "manifest.json").read_text()))
    a, b = manifests
    assert a["files"] == b["files"]
    for name in a["files"]:
        assert (tmp_path / "0.duh" / name).read_bytes() == (tmp_path / "1.duh" / name).read_bytes()
    assert a["build"]["cache"] == {"enabled": False}
    # The manifests differ only in when and how long (timestamps, seconds).
    for doc in (a, b):
        doc["build"].pop("created"), doc["build"].pop("seconds")
        for p in doc["passes"]:
            p.pop("seconds")
    assert a == b


def test_the_cache_keeps_itself_under_its_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUH_CACHE_MAX_SIZE", "3k")
    store = StageCache(tmp_path / "builds")
    files = tmp_path / "files"
    files.mkdir()
    (files / "blob").write_bytes(b"x" * 1500)
    store.store("a" * 64, "stage", "first", files, {})
    (store.root / "last-prune").unlink()  # past the five minutes between two prunes
    store.store("b" * 64, "stage", "second", files, {})
    store.store("c" * 64, "stage", "third", files, {})  # within five minutes: no prune yet
    assert len(store.entries()) == 3
    (store.root / "last-prune").unlink()
    store.store("d" * 64, "stage", "fourth", files, {})
    names = [e.name for e in store.entries()]
    assert "fourth" in names and "first" not in names
    assert sum(e.size for e in store.entries()) <= 3 << 10
    monkeypatch.setenv("DUH_CACHE_MAX_SIZE", "0")  # no limit
    (store.root / "last-prune").unlink()
    store.store("e" * 64, "stage", "fifth", files, {})
    assert len(store.entries()) == len(names) + 1
