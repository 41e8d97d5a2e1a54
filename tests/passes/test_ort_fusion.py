"""ONNX Runtime's attention fusion on what torch.onnx writes for scaled_dot_product_attention.

torch's export splits the scale as sqrt(scale) over q and over k (and guards a boolean mask's
Softmax against NaN); ONNX Runtime's BERT fusion matched neither, so encoders exported through
F.scaled_dot_product_attention (transformers' sdpa attention among them) kept their attention as
separate MatMuls on ONNX Runtime. The tiny encoder here is exported with dynamic batch and
sequence; its fused graph must hold Attention, keep those dims, and give the source's numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from duh.passes import create_pass
from tests.passes._models import ctx, run_ort

D, HEADS = 64, 4


def _encoder(
    tmp_path: Path, mask: str, scale: float | None = None, dynamo: bool = False
) -> onnx.ModelProto:
    """A 2-block encoder using F.scaled_dot_product_attention, exported with dynamic batch and
    seq: by the TorchScript exporter at opset 17, or by the dynamo one at 18. ``mask``:
    "additive" ((1 - mask) * min, as BERT writes it) or "bool"."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.f1, self.f2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x, bias):  # type: ignore[no-untyped-def]
            b, t = x.shape[0], x.shape[1]

            def split(z):  # type: ignore[no-untyped-def]
                return z.view(b, t, HEADS, D // HEADS).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
            x = self.ln1(x + self.o(y.transpose(1, 2).reshape(b, t, D)))
            return self.ln2(x + self.f2(F.gelu(self.f1(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.pos = nn.Embedding(100, D), nn.Embedding(32, D)
            self.ln = nn.LayerNorm(D)
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, ids, attention_mask):  # type: ignore[no-untyped-def]
            x = self.ln(self.emb(ids) + self.pos(torch.arange(ids.shape[1])[None]))
            keep = attention_mask[:, None, None, :]
            if mask == "bool":
                bias = keep.bool()
            else:
                bias = (1.0 - keep.to(x.dtype)) * torch.finfo(x.dtype).min
            for block in self.blocks:
                x = block(x, bias)
            return x

    torch.manual_seed(0)
    path = tmp_path / f"sdpa_{mask}.onnx"
    ids = torch.randint(0, 100, (2, 16))
    names = ["input_ids", "attention_mask", "hidden"]
    dims: dict[str, object]
    if dynamo:
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=32)
        dims = {"dynamic_shapes": ({0: batch, 1: seq}, {0: batch, 1: seq})}
    else:
        dims = {"dynamic_axes": {n: {0: "batch", 1: "seq"} for n in names}}
    torch.onnx.export(
        Encoder().eval(),
        (ids, torch.ones(2, 16, dtype=torch.int64)),
        str(path),
        input_names=names[:2],
        output_names=names[2:],
        opset_version=18 if dynamo else 17,
        dynamo=dynamo,
        **dims,  # type: ignore[arg-type]
    )
    return onnx.load(str(path))


def _feeds() -> list[dict[str, np.ndarray]]:
    """Two shapes (the dims are dynamic), padding in some rows."""
    rng = np.random.default_rng(0)
    feeds = []
    for batch, seq in ((2, 16), (3, 7)):
        mask = np.ones((batch, seq), np.int64)
        mask[1, seq // 2 :] = 0
        ids = rng.integers(0, 100, (batch, seq)).astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _pipeline(model: onnx.ModelProto, tmp_path: Path) -> tuple[onnx.ModelProto, list[str]]:
    """What the onnxruntime cpu target runs before its engine build: simplify, fold, fuse."""
    notes: list[str] = []
    for name in ("simplify", "fold-constants", "fuse"):
        result = create_pass(name).run(model, ctx(tmp_path))
        model, notes = result.model, notes + list(result.notes)
    return model, notes


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _dims(model: onnx.ModelProto) -> dict[str, list[str | int]]:
    return {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in (*model.graph.input, *model.graph.output)
    }


def _assert_same_numbers(fused: onnx.ModelProto, source: onnx.ModelProto) -> None:
    for feed in _feeds():
        want, got = run_ort(source, feed)[0], run_ort(fused, feed)[0]
        # Padded query rows differ only in the last bits: both models mask the same keys.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-17", "dynamo-18"])
def test_sdpa_export_gets_attention_with_dynamic_dims(tmp_path: Path, dynamo: bool) -> None:
    source = _encoder(tmp_path, "additive", dynamo=dynamo)
    fused, notes = _pipeline(source, tmp_path)
    ops = _ops(fused)
    assert ops.count("Attention") == 2, notes
    assert "Softmax" not in ops and "sdpa-scale: 2" in notes
    if dynamo:  # it transposes k on 3-D views, and unsqueezes the mask once over two axes
        assert {"sdpa-k-transpose: 2", "mask-unsqueeze: 1"} <= set(notes)
    assert any(
        n.startswith("onnxruntime transformer fusions: ") and "Attention 2" in n for n in notes
    )
    dims = _dims(source)
    assert _dims(fused) == dims
    assert all(isinstance(d, str) for d in dims["input_ids"] + dims["hidden"][:2]), dims
    _assert_same_numbers(fused, source)


def test_a_boolean_mask_gets_attention_too(tmp_path: Path) -> None:
    # torch writes Where(mask, 0, -inf) and a NaN guard after the Softmax for a boolean mask.
    source = _encoder(tmp_path, "bool")
    fused, notes = _pipeline(source, tmp_path)
    assert _ops(fused).count("Attention") == 2, notes
    assert {"bool-mask-bias: 1", "softmax-nan-guard: 2"} <= set(notes)
    assert "IsNaN" not in _ops(fused)
    assert _dims(fused) == _dims(source)
    _assert_same_numbers(fused, source)


def test_a_block_left_unfused_keeps_the_exact_graph(tmp_path: Path) -> None:
    # ORT's Attention assumes the scale 1/sqrt(head size): with another, nothing may fuse, and
    # the rewrites that are exact only under a fused Attention (the boolean mask made additive,
    # the NaN guard taken off) are undone, so a row with every key masked still reads 0.
    source = _encoder(tmp_path, "bool", scale=0.5)
    fused, notes = _pipeline(source, tmp_path)
    assert "Attention" not in _ops(fused)
    assert "attention: 2 of 2 attention block(s) left unfused" in " ".join(notes)
    assert "softmax-nan-guard: 2 put back where attention stayed unfused" in notes
    assert not any(n.startswith(("bool-mask-bias", "sdpa-scale")) for n in notes), notes
    assert _ops(fused).count("IsNaN") == 2
    _assert_same_numbers(fused, source)
    feed = _feeds()[0]
    feed["attention_mask"][0] = 0
    want, got = run_ort(source, feed)[0], run_ort(fused, feed)[0]
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_openvino_keeps_the_sdpa_graph_free_of_contrib_ops(tmp_path: Path) -> None:
    source = _encoder(tmp_path, "additive")
    result = create_pass("fuse").run(source, ctx(tmp_path, engine="openvino"))
    assert not any(n.domain == "com.microsoft" for n in result.model.graph.node)
    assert not any("sdpa-scale" in n for n in result.notes)
