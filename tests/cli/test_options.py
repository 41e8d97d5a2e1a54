"""How the commands are put together: what each one imports, and options declared once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from duh.cli import app
from duh.cli._bench_options import BenchOptions
from duh.cli._common import parse_key_values
from duh.errors import ConfigError
from duh.serve import BatchConfig

runner = CliRunner()


def _command(name: str) -> typer.core.TyperCommand:
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("command", ["serve", "bench"])
def test_serve_and_bench_do_not_load_the_compiler(command: str) -> None:
    # In a fresh interpreter: this test process has long imported the compiler.
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from duh.cli import app
        result = CliRunner().invoke(app, ["{command}", "--help"])
        assert result.exit_code == 0, result.output
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[:2] in (["duh", "compiler"], ["duh", "passes"]))
        print(" ".join(loaded))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"duh {command} loaded {proc.stdout.strip()}"


def test_build_loads_the_compiler_when_it_runs() -> None:
    # The guard above would pass if nothing could ever load the compiler; this one shows it can.
    script = textwrap.dedent("""
        import sys
        from typer.testing import CliRunner
        from duh.cli import app
        result = CliRunner().invoke(app, ["build", "no-such-model.onnx", "--dry-run"])
        assert result.exit_code == 3, result.output
        print("duh.compiler" in sys.modules)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_serve_takes_its_batching_defaults_and_help_from_batch_config() -> None:
    params = {p.name: p for p in _command("serve").params}
    for field in dataclasses.fields(BatchConfig):
        param = params[field.name]
        assert field.metadata["help"] in (getattr(param, "help", None) or ""), field.name
        if field.name != "preferred_batch_sizes":  # typed as "8,16,32" text, default none
            assert param.default == field.default, field.name


def test_bench_options_are_the_bench_command_parameters() -> None:
    params = [p.name for p in _command("bench").params]
    assert params == [f.name for f in dataclasses.fields(BenchOptions)]


def test_shared_options_read_the_same_in_every_command() -> None:
    def option(command: str, flag: str) -> tuple[tuple[str, ...], str | None]:
        param = next(p for p in _command(command).params if flag in p.opts)
        return tuple(param.opts), getattr(param, "help", None)

    for flag, commands in (
        ("--option", ("build", "bench", "serve")),
        ("--threads", ("bench", "serve")),
        ("--shape", ("build", "bench")),
        ("--json", ("build", "inspect", "targets")),
    ):
        assert len({option(c, flag) for c in commands}) == 1, flag


def test_one_key_value_parser() -> None:
    assert parse_key_values(["a=1", " b = x=y "], "--option") == {"a": "1", "b": "x=y"}
    assert parse_key_values(None, "--option") == {}
    for bad in ("novalue", "=1", " =1"):
        with pytest.raises(ConfigError, match=f"--option {bad!r} is not KEY=VALUE"):
            parse_key_values([bad], "--option")


@pytest.mark.parametrize("command", ["build", "bench"])
def test_a_malformed_option_is_one_line_and_exit_2(command: str) -> None:
    result = runner.invoke(app, [command, "model.onnx", "--option", "threads"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --option 'threads' is not KEY=VALUE"
