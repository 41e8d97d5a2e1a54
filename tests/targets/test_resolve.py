from __future__ import annotations

import dataclasses

import pytest

from duh.errors import ConfigError, TargetError
from duh.host import host_info
from duh.targets import TargetSpec, candidates, get_target, list_targets, parse_target


@pytest.mark.parametrize(
    ("text", "engine", "device", "precision"),
    [
        ("cpu", None, "cpu", "fp32"),
        ("CPU-INT8", None, "cpu", "int8"),
        ("cuda-fp16", None, "cuda", "fp16"),
        ("openvino:cpu-bf16", "openvino", "cpu", "bf16"),
        ("tvm:cpu", "tvm", "cpu", "fp32"),
        ("auto", None, None, None),
    ],
)
def test_parse(text: str, engine: str | None, device: str | None, precision: str | None) -> None:
    request = parse_target(text)
    assert (request.engine, request.device, request.precision) == (engine, device, precision)


@pytest.mark.parametrize("text", ["gpu", "cpu-int4", "openvino:tpu-fp32", "nosuch:cpu"])
def test_unknown_names_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_target(text)


def test_a_short_name_offers_every_engine_that_can() -> None:
    specs = candidates(parse_target("cpu"), host_info())
    assert TargetSpec("onnxruntime", "cpu", "fp32") in specs
    assert TargetSpec("openvino", "cpu", "fp32") in specs


def test_a_pinned_engine_offers_itself() -> None:
    assert candidates(parse_target("openvino:cpu-fp32"), host_info()) == [
        TargetSpec("openvino", "cpu", "fp32")
    ]


def test_bf16_needs_the_instruction_set() -> None:
    host = host_info()
    bare = dataclasses.replace(host, cpu_flags=frozenset({"avx2"}))
    reason = get_target("openvino").unavailable_reason("cpu", "bf16", bare)
    assert reason is not None and "AVX-512 BF16" in reason
    with pytest.raises(TargetError, match="cannot be built on this host"):
        candidates(parse_target("openvino:cpu-bf16"), bare)


def test_cuda_without_a_device() -> None:
    host = dataclasses.replace(host_info(), cuda=())
    with pytest.raises(TargetError, match="no CUDA device"):
        candidates(parse_target("cuda"), host)


def test_list_covers_short_and_pinned_names() -> None:
    names = {row.name for row in list_targets(host_info())}
    assert {"cpu", "auto", "cuda-int8", "onnxruntime:cpu-fp32", "openvino:cpu-int8"} <= names
