"""Marks for tests that need an instruction set this host may lack (detected, never assumed)."""

from __future__ import annotations

import pytest

from duh.host import host_info

__all__ = ["HAS_BF16", "needs_bf16"]

HAS_BF16 = host_info().has("avx512_bf16") or host_info().has("amx_bf16")

needs_bf16 = pytest.mark.skipif(
    not HAS_BF16,
    reason="the CPU has no AVX-512 BF16 or AMX-BF16: openvino:cpu-bf16 is refused on this host",
)
