"""Project recipes: duh.toml and [tool.duh] read, checked at the edge, and built like the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.errors import ConfigError
from duh.recipe import BuildEntry, build_kwargs, load_recipe_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUH_CACHE_DIR", str(tmp_path / "cache"))


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _write(tmp_path: Path, text: str, name: str = "duh.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


TWO_BY_TWO = f"""
[defaults]
check_samples = 4

[models.digits]
model = "{FIXTURES / "digits_cnn.onnx"}"
targets = [
  {{ target = "onnxruntime:cpu-fp32", output = "out/digits.ort.duh" }},
  {{ target = "openvino:cpu-fp32", output = "out/digits.ov.duh" }},
]

[models.mlp]
model = "{FIXTURES / "mlp_external.onnx"}"
tolerance = {{ atol = 1e-3 }}
targets = [
  {{ target = "onnxruntime:cpu-fp32", output = "out/mlp.ort.duh" }},
  {{ target = "openvino:cpu-fp32", output = "out/mlp.ov.duh" }},
]
"""


def test_two_models_by_two_targets_build_four_artifacts_that_run(tmp_path: Path) -> None:
    recipe = _write(tmp_path, TWO_BY_TWO)
    code, out, err = _run("build", "-c", str(recipe), "--json")
    assert code == 0, err
    report = json.loads(out)
    names = [b["name"] for b in report["builds"]]
    assert names == [
        "digits/onnxruntime:cpu-fp32",
        "digits/openvino:cpu-fp32",
        "mlp/onnxruntime:cpu-fp32",
        "mlp/openvino:cpu-fp32",
    ]
    for build in report["builds"]:
        artifact = Path(build["output"])
        assert artifact.parent == tmp_path / "out"  # outputs are relative to the recipe
        session = duh.load(artifact)
        feed = {
            s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], s.dtype)
            for s in session.inputs
        }
        assert all(np.isfinite(v).all() for v in session.run(feed).values())
        session.close()
    mlp = next(b for b in report["recipe"]["builds"] if b["name"] == "mlp/openvino:cpu-fp32")
    assert mlp["tolerance"] == {"atol": 1e-3} and mlp["check_samples"] == 4


def test_only_builds_the_named_model(tmp_path: Path) -> None:
    recipe = _write(tmp_path, TWO_BY_TWO)
    code, out, err = _run("build", "-c", str(recipe), "--only", "mlp", "--dry-run", "--json")
    assert code == 0, err
    assert [b["name"] for b in json.loads(out)["builds"]] == [
        "mlp/onnxruntime:cpu-fp32",
        "mlp/openvino:cpu-fp32",
    ]
    assert not (tmp_path / "out").exists()
    code, _, err = _run("build", "-c", str(recipe), "--only", "resnet")
    assert code == 2
    assert "--only resnet: not in the recipe" in err and "digits" in err


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ('[models.a]\nmodel = "m.onnx"\ncalib_sample = 3\n', "calib_sample", "[models.a]"),
        ('[model.a]\nmodel = "m.onnx"\n', "model", "duh.toml"),
        (
            '[defaults]\ntarget = "cpu"\nbogus = 1\n[models.a]\nmodel = "m.onnx"\n',
            "bogus",
            "defaults",
        ),
        (
            '[models.a]\nmodel = "m.onnx"\ntargets = [{target = "cpu", outptu = "x"}]\n',
            "outptu",
            "targets #1",
        ),
        ('[models.a]\nmodel = "m.onnx"\ntolerance = {atl = 1}\n', "atl", "tolerance"),
        ('[models.a]\nmodel = "m.onnx"\nbench = {fail = ["p99_ms>2"]}\n', "fail", "bench"),
    ],
)
def test_an_unknown_key_is_one_line_naming_it_and_the_valid_ones(
    tmp_path: Path, text: str, key: str, where: str
) -> None:
    recipe = _write(tmp_path, text)
    code, out, err = _run("build", "-c", str(recipe))
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert f"unknown key {key!r}" in line and where in line and "the valid keys are" in line


def test_wrong_types_and_bad_gates_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calib_samples must be int"):
        load_recipe_file(_write(tmp_path, '[models.a]\nmodel = "m"\ncalib_samples = "8"\n'))
    with pytest.raises(ConfigError, match="unknown metric"):
        load_recipe_file(
            _write(tmp_path, '[models.a]\nmodel = "m"\nbench = {fail_if = ["fast>2"]}\n')
        )
    with pytest.raises(ConfigError, match="unknown pass 'simplfy'"):
        load_recipe_file(
            _write(tmp_path, '[models.a]\nmodel = "m"\npasses = [{name = "simplfy"}]\n')
        )
    with pytest.raises(ConfigError, match="has no model"):
        load_recipe_file(_write(tmp_path, '[models.a]\ntarget = "cpu"\n'))
    with pytest.raises(ConfigError, match="named twice"):
        load_recipe_file(_write(tmp_path, '[models.a]\nmodel = "m"\ntargets = ["cpu", "cpu"]\n'))


def test_pyproject_tool_duh_table(tmp_path: Path) -> None:
    text = f'[project]\nname = "x"\n\n[tool.duh.models.digits]\nmodel = "{FIXTURES / "digits_cnn.onnx"}"\n'
    recipe = load_recipe_file(_write(tmp_path, text, "pyproject.toml"))
    assert [b.name for b in recipe.builds] == ["digits/cpu"]
    with pytest.raises(ConfigError, match=r"no \[tool.duh\] table"):
        load_recipe_file(_write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml"))


def test_the_cli_compiles_to_the_same_recipe_as_the_file(tmp_path: Path) -> None:
    model, calib = FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_calib.npz"
    flags = [
        "build", str(model), "-t", "openvino:cpu-int8", "--calib", str(calib),
        "--calib-samples", "64", "--calib-method", "percentile", "--shape", "input=1x1x8x8",
        "--option", "num_streams=1", "--no-verify", "--check-samples", "3", "--no-cache",
        "-o", str(tmp_path / "d.duh"), "--dry-run", "--json",
    ]  # fmt: skip
    code, out, err = _run(*flags)
    assert code == 0, err
    from_cli = json.loads(out)["recipe"]["builds"][0]
    recipe = _write(
        tmp_path,
        f"""[models.digits_cnn]
model = "{model}"
calib = "{calib}"
calib_samples = 64
calib_method = "percentile"
shape = {{ input = [1, 1, 8, 8] }}
option = {{ num_streams = 1 }}
verify = false
check_samples = 3
cache = false
targets = [{{ target = "openvino:cpu-int8", output = "d.duh" }}]
""",
    )
    code, out, err = _run("build", "-c", str(recipe), "--dry-run", "--json")
    assert code == 0, err
    from_file = json.loads(out)["recipe"]["builds"][0]
    assert from_file == from_cli
    assert from_cli["calib_method"] == "percentile" and from_cli["shape"] == {"input": "1x1x8x8"}
    # Both reach the compiler as the same keyword arguments.
    entry = load_recipe_file(recipe).builds[0]
    kwargs = build_kwargs(entry)
    assert kwargs["pass_options"] == {"quantize": {"calibrator": "percentile"}}
    assert kwargs["shapes"] == {"input": (1, 1, 8, 8)} and kwargs["cache"] is False
    assert kwargs["target_options"] == {"num_streams": "1"}


def test_every_build_flag_has_a_recipe_key() -> None:
    import inspect

    from duh.cli.build import build
    from duh.recipe import BUILD_KEYS

    # Flags that act on the run, not on what is built, have no key.
    actions = {"config", "only", "dry_run", "as_json", "sign"}
    renamed = {"no_verify": "verify", "no_cache": "cache"}
    for name in inspect.signature(build).parameters:
        if name not in actions:
            assert renamed.get(name, name) in BUILD_KEYS, name
    assert set(BUILD_KEYS) <= {f for f in BuildEntry.__dataclass_fields__}
