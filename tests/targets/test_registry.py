"""The target plugin contract: declared fields, checked when a plugin registers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from duh.errors import TargetError
from duh.host import host_info
from duh.targets import (
    PassSpec,
    TargetSpec,
    candidates,
    list_targets,
    parse_target,
    register_target,
    target_plugins,
)
from duh.targets._base import _TARGETS

TOY = "toy"


class _Toy:
    """A complete plugin that builds nothing: enough to exercise resolution."""

    name = TOY
    pip_extra = "core"
    devices = ("cpu",)
    precisions = ("fp32",)
    max_ir_version = 13
    max_opset = 21
    short_name_candidate = False

    def unavailable_reason(self, device: str, precision: str, host: Any) -> str | None:
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        return []

    def compile(self, model: Any, ctx: Any, out_dir: Path) -> Any:
        raise NotImplementedError

    def load(self, artifact: Path, manifest: Any, options: Any) -> Any:
        raise NotImplementedError


@pytest.fixture
def registry() -> Iterator[None]:
    """The built-ins loaded, and whatever a test registers removed afterwards."""
    target_plugins()
    before = dict(_TARGETS)
    try:
        yield
    finally:
        _TARGETS.clear()
        _TARGETS.update(before)


def test_every_builtin_declares_its_short_name_membership() -> None:
    members = {p.name: p.short_name_candidate for p in target_plugins()}
    assert members == {"onnxruntime": True, "openvino": True, "tvm": False, "tensorrt": True}


@pytest.mark.usefixtures("registry")
def test_a_plugin_missing_protocol_fields_is_refused_by_name() -> None:
    class Incomplete:
        name = "incomplete"
        pip_extra = "core"
        devices = ("cpu",)
        precisions = ("fp32",)
        max_ir_version = 13

        def unavailable_reason(self, device: str, precision: str, host: Any) -> str | None:
            return None

    with pytest.raises(TargetError) as caught:
        register_target(Incomplete)
    message = str(caught.value)
    assert "Incomplete lacks the TargetPlugin field(s) " in message
    assert "field(s) max_opset, short_name_candidate, default_passes, compile, load;" in message
    assert "incomplete" not in [p.name for p in target_plugins()]


@pytest.mark.usefixtures("registry")
def test_short_names_skip_a_plugin_that_declares_itself_pinned_only() -> None:
    register_target(_Toy)
    host = host_info()
    assert TOY not in {s.engine for s in candidates(parse_target("cpu"), host)}
    assert candidates(parse_target("toy:cpu"), host) == [TargetSpec(TOY, "cpu", "fp32")]
    rows = {row.name: row for row in list_targets(host)}
    assert TOY not in rows["cpu"].engines
    assert rows["toy:cpu-fp32"].reason is None


@pytest.mark.usefixtures("registry")
def test_a_short_name_candidate_joins_the_short_names() -> None:
    class Candidate(_Toy):
        short_name_candidate = True

    register_target(Candidate)
    assert TOY in {s.engine for s in candidates(parse_target("cpu"), host_info())}

