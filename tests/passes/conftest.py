"""Fixtures for the pass tests: a BERT-like encoder exported from torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bert_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT-like encoder (static shapes: batch 1, 16 tokens) exported from torch."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, d: int = 64, heads: int = 4) -> None:
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.f1, self.f2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x, mask):  # type: ignore[no-untyped-def]
            b, t, d = x.shape
            hd = d // self.heads

            def split(z):  # type: ignore[no-untyped-def]
                return z.view(b, t, self.heads, hd).transpose(1, 2)

            scores = split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / math.sqrt(hd)
            scores = scores + (1.0 - mask[:, None, None, :]) * -10000.0
            y = (scores.softmax(-1) @ split(self.v(x))).transpose(1, 2).reshape(b, t, d)
            x = self.ln1(x + self.o(y))
            return self.ln2(x + self.f2(nn.functional.gelu(self.f1(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.pos = nn.Embedding(100, 64), nn.Embedding(16, 64)
            self.ln = nn.LayerNorm(64)
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, ids, mask):  # type: ignore[no-untyped-def]
            x = self.ln(self.emb(ids) + self.pos(torch.arange(ids.shape[1])[None]))
            for block in self.blocks:
                x = block(x, mask.float())
            return x

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    ids = torch.randint(0, 100, (1, 16))
    torch.onnx.export(
        Encoder().eval(),
        (ids, torch.ones(1, 16, dtype=torch.int64)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        opset_version=17,
        dynamo=False,
    )
    return path
