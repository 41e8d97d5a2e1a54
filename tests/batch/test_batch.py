"""``duh batch`` on real engines: same answers as ``Session.run`` sample by sample, resumable."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import duh
from duh.batch import RECORD_NAME, BatchRequest, plan_batch, read_outputs, run_batch, shard_name
from duh.cli import app
from duh.errors import ConfigError, DuhError
from fixtures.serve_models import reference, write_model

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "fixtures" / "digits_cnn.onnx"


def _one_by_one(model: Path, x: np.ndarray, name: str) -> np.ndarray:
    with duh.load(model) as session:
        return np.concatenate([session.run({name: x[i : i + 1]})["logits"] for i in range(len(x))])


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """10,000 digit-shaped samples over three files (.npz, .npy, .npz) in one folder."""
    folder = tmp_path_factory.mktemp("batch-in")
    x = np.random.default_rng(0).standard_normal((10_000, 1, 8, 8)).astype(np.float32)
    np.savez(folder / "a.npz", input=x[:4000])
    np.save(folder / "b.npy", x[4000:7500].astype(np.float64))  # cast to the model's float32
    np.savez(folder / "c.npz", arr_0=x[7500:])
    return folder, x


@pytest.fixture(scope="module")
def one_by_one(samples: tuple[Path, np.ndarray]) -> np.ndarray:
    """``Session.run`` over the 10,000 samples one at a time."""
    return _one_by_one(DIGITS, samples[1], "input")


@pytest.mark.parametrize("workers", [None, 2], ids=["in-process", "pool-of-2"])
def test_ten_thousand_samples_match_session_run_one_by_one(
    samples: tuple[Path, np.ndarray], one_by_one: np.ndarray, workers: int | None, tmp_path: Path
) -> None:
    folder, _ = samples
    request = BatchRequest(DIGITS, folder, tmp_path / "out", batch_size=64, shard_size=1500,
                           workers=workers)
    result = run_batch(request)
    assert (result.samples, result.shards, result.shards_run, result.samples_run) == (
        10_000, 7, 7, 10_000)
    assert result.workers == (workers or 1)  # one engine in this process unless told
    got = read_outputs(tmp_path / "out")["logits"]
    np.testing.assert_allclose(got, one_by_one, rtol=1e-5, atol=1e-5)


def test_a_finished_job_is_not_run_again(samples: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, _ = samples
    request = BatchRequest(DIGITS, folder, tmp_path / "out", shard_size=5000, workers=1)
    run_batch(request)
    again = run_batch(request)
    assert (again.shards_run, again.shards_skipped, again.samples_run) == (0, 2, 0)


def test_another_job_in_the_same_folder_is_refused(
    samples: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, _ = samples
    run_batch(BatchRequest(DIGITS, folder, tmp_path / "out", shard_size=5000, workers=1))
    with pytest.raises(ConfigError, match="results of another job"):
        plan_batch(BatchRequest(DIGITS, folder, tmp_path / "out", shard_size=4000))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        plan_batch(BatchRequest(DIGITS, folder, tmp_path / "other"))


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "pool-of-2"])
def test_killed_half_way_then_resumed_redoes_and_loses_no_shard(
    workers: int, tmp_path: Path
) -> None:
    # The heavy MLP at batch 1 takes seconds for 6,000 rows: time to kill the job in the middle.
    model = write_model("heavy", tmp_path / "heavy.onnx")
    x = np.random.default_rng(1).standard_normal((6000, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "duh", "batch", str(model), "-i", str(tmp_path / "x.npy"),
           "-o", str(out), "--shard-size", "100", "--batch-size", "1", "--workers", str(workers),
           "--threads", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.npz"))) < 3:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, at once
    proc.wait()
    before = {p.name: p.stat() for p in out.glob("shard-*.npz")}
    assert 3 <= len(before) < 60, "the job was not stopped half way"

    # The batch size is not part of the job (the shards are): the rest runs at batch 64.
    result = run_batch(BatchRequest(model, tmp_path / "x.npy", out, batch_size=64,
                                    shard_size=100, workers=workers))
    assert result.shards_skipped == len(before)
    assert result.shards_run == 60 - len(before)
    for name, stat in before.items():  # not rewritten: same file, same time
        now = (out / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [RECORD_NAME, *(shard_name(i) for i in range(60))])
    np.testing.assert_allclose(read_outputs(out)["y"], reference("heavy", x), rtol=1e-3,
                               atol=1e-3)


def test_a_csv_table_maps_columns_to_inputs(tmp_path: Path) -> None:
    from fixtures.serve_models import write_small_models

    scale = write_small_models(tmp_path / "models")["scale"]  # x[N,K] -> 2x
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    with (tmp_path / "t.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "x"])
        writer.writerows([[i, " ".join(str(v) for v in row)] for i, row in enumerate(x)])
    run_batch(BatchRequest(scale, tmp_path / "t.csv", tmp_path / "out", batch_size=4,
                           shard_size=4, workers=1))
    np.testing.assert_array_equal(read_outputs(tmp_path / "out")["y"], 2 * x)


def test_an_image_folder_uses_the_preprocessing_spec(tmp_path: Path) -> None:
    from PIL import Image

    from duh.calibration import load_image, preprocess_spec

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(12):
        pixels = rng.integers(0, 256, (20, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
    spec = "resize=8x8,order=gray,scale=0.0078125"
    run_batch(BatchRequest(DIGITS, images, tmp_path / "out", preprocess=spec, shard_size=5,
                           workers=1))
    x = np.stack([load_image(images / f"{i:02d}.png", preprocess_spec(spec), (8, 8))
                  for i in range(12)])
    np.testing.assert_allclose(read_outputs(tmp_path / "out")["logits"],
                               _one_by_one(DIGITS, x, "input"), rtol=1e-5, atol=1e-5)


def test_a_shard_that_fails_stops_the_job_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / f"{i:02d}.png")
    good = (images / "11.png").read_bytes()
    (images / "11.png").write_bytes(b"not a png")  # in shard 2 (rows 10-11)
    spec = "order=gray,scale=0.0078125"
    out = tmp_path / "out"
    with pytest.raises(DuhError, match=r"shard 2: .*11\.png cannot be read"):
        run_batch(BatchRequest(DIGITS, images, out, preprocess=spec, shard_size=5))
    # Shard 1 was being written while shard 2 was read: it is finished and recorded all the same.
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, shard_name(0), shard_name(1)]
    assert set(json.loads((out / RECORD_NAME).read_text())["shards"]) == {"0", "1"}
    (images / "11.png").write_bytes(good)
    again = run_batch(BatchRequest(DIGITS, images, out, preprocess=spec, shard_size=5))
    assert (again.shards_skipped, again.shards_run, again.samples_run) == (2, 1, 2)
    assert read_outputs(out)["logits"].shape == (12, 10)


def test_cli_summary_json_and_errors(samples: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, _ = samples
    runner = CliRunner()
    ok = runner.invoke(app, ["batch", str(DIGITS), "-i", str(folder), "-o", str(tmp_path / "o"),
                             "--shard-size", "5000", "-w", "1", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"samples_run": 10000' in ok.output
    missing = runner.invoke(app, ["batch", str(DIGITS), "-i", str(tmp_path / "nope"), "-o",
                                  str(tmp_path / "o2")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "o2").exists()
    bad = runner.invoke(app, ["batch", str(DIGITS), "-i", str(folder), "-o", str(tmp_path / "o3"),
                              "--batch-size", "0"])
    assert bad.exit_code == 2 and "--batch-size must be at least 1" in bad.output


def test_a_parquet_table_maps_columns_to_inputs(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="Parquet input needs duh[tables]")
    import pyarrow.parquet as pq

    from fixtures.serve_models import write_small_models

    scale = write_small_models(tmp_path / "models")["scale"]  # x[N,K] -> 2x
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    pq.write_table(pa.table({"x": [list(r) for r in x], "id": list(range(10))}),
                   tmp_path / "t.parquet")
    run_batch(BatchRequest(scale, tmp_path / "t.parquet", tmp_path / "out", batch_size=3,
                           shard_size=4, workers=1))
    np.testing.assert_array_equal(read_outputs(tmp_path / "out")["y"], 2 * x)


def test_an_output_that_is_a_file_or_a_broken_shard_is_one_error(
    samples: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, _ = samples
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        plan_batch(BatchRequest(DIGITS, folder, tmp_path / "file"))
    out = tmp_path / "out"
    run_batch(BatchRequest(DIGITS, folder, out, shard_size=5000, workers=1))
    record = json.loads((out / RECORD_NAME).read_text())
    del record["shards"]["1"]  # as if killed between the rename and the record
    (out / RECORD_NAME).write_text(json.dumps(record))
    (out / shard_name(1)).write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"shard-00001.npz is unreadable .*delete it"):
        plan_batch(BatchRequest(DIGITS, folder, out, shard_size=5000))
