"""PyTorch models trained for a few seconds on real data, saved in each form duh reads.

- a small CNN on scikit-learn's digits (8x8 images, 10 classes);
- a small transformer encoder (plain torch: embedding, self-attention, layer norm) on a tiny
  text task: is a short sentence of a fixed lexicon positive or negative.

Each fixture gives the saved files, calibration/check data (.npz) and torch's own predictions
on held-out data, which the artifacts are checked against.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="duh[torch] is not installed")
# One thread: training a few seconds on a shared CPU runs far faster than with threads contending.
torch.set_num_threads(1)


@dataclass(frozen=True)
class Trained:
    """One trained model: its saved forms, data, and torch's own outputs on held-out inputs."""

    module: torch.nn.Module
    input_name: str
    program: Path  # torch.export program (.pt2)
    factory: str  # module.py:factory
    calib: Path  # .npz, the input name -> samples the INT8 build calibrates on
    check: Path  # .npz of held-out inputs
    x_test: np.ndarray
    y_test: np.ndarray
    torch_logits: np.ndarray  # torch's own outputs on x_test

    @property
    def torch_accuracy(self) -> float:
        return float(np.mean(self.torch_logits.argmax(-1) == self.y_test))


CNN_SOURCE = '''
import torch


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32 * 2 * 2, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(image)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))
'''

ENCODER_SOURCE = '''
import math

import torch

VOCAB, LENGTH, WIDTH = 40, 12, 32


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = torch.nn.Linear(WIDTH, WIDTH)
        self.norm1 = torch.nn.LayerNorm(WIDTH)
        self.norm2 = torch.nn.LayerNorm(WIDTH)
        self.ff1 = torch.nn.Linear(WIDTH, 2 * WIDTH)
        self.ff2 = torch.nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, 2, w // 2).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // 2), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, w))
        return x + self.ff2(torch.relu(self.ff1(self.norm2(x))))


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.position = torch.nn.Parameter(torch.zeros(1, LENGTH, WIDTH))
        self.blocks = torch.nn.Sequential(Block(), Block())
        self.head = torch.nn.Linear(WIDTH, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(tokens) + self.position)
        return self.head(x.mean(dim=1))
'''

FACTORY = '''

def make():
    import pathlib

    model = {cls}()
    weights = pathlib.Path(__file__).with_name("{weights}")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), (torch.zeros({shape}, dtype={dtype}),)
'''


def _module(source: str, name: str, tmp: Path) -> type[torch.nn.Module]:
    """The class ``name`` of ``source``, imported from a file (a pickled module names it)."""
    import importlib.util
    import sys

    path = tmp / f"defs_{name.lower()}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = code
    spec.loader.exec_module(code)
    cls = getattr(code, name)
    assert isinstance(cls, type)
    return cls


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), 64))
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _save(
    tmp: Path,
    model: torch.nn.Module,
    source: str,
    cls: str,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    split: int,
) -> Trained:
    (tmp / "model.py").write_text(
        textwrap.dedent(source)
        + FACTORY.format(
            cls=cls,
            weights="weights.pt",
            shape=(1, *x.shape[1:]),
            dtype="torch.int64" if x.dtype == np.int64 else "torch.float32",
        )
    )
    torch.save(model.state_dict(), tmp / "weights.pt")
    example = (torch.from_numpy(x[:2]),)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp / "model.pt2")
    np.savez(tmp / "calib.npz", **{name: x[:200]})
    x_test, y_test = x[split:], y[split:]
    np.savez(tmp / "check.npz", **{name: x_test[:64]})
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test)).numpy()
    return Trained(
        model, name, tmp / "model.pt2", f"{tmp / 'model.py'}:make", tmp / "calib.npz",
        tmp / "check.npz", x_test, y_test, logits,
    )  # fmt: skip


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The CNN, trained for 150 steps on 1,300 digits; 497 held out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    x = (digits.images[order] / 16.0).astype(np.float32)[:, None]
    y = digits.target[order].astype(np.int64)
    tmp = tmp_path_factory.mktemp("digits-cnn")
    torch.manual_seed(0)  # the initial weights: the same trained model on every run
    model = _module(CNN_SOURCE, "DigitsCNN", tmp)()
    _train(model, x[:1300], y[:1300], steps=150, lr=5e-3)
    return _save(tmp, model, CNN_SOURCE, "DigitsCNN", "image", x, y, 1300)


POSITIVE = ("good", "great", "fine", "happy", "love", "nice", "best", "fun")
NEGATIVE = ("bad", "awful", "poor", "sad", "hate", "worst", "dull", "ugly")
FILLER = ("the", "movie", "was", "a", "and", "plot", "it", "very", "cast", "film", "story")


def _sentences(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentences of 12 words: fillers and sentiment words, labelled by which kind is in the
    majority (words are ids of a fixed 40-word lexicon; 0 pads)."""
    lexicon = ["<pad>", *POSITIVE, *NEGATIVE, *FILLER]
    ids = {w: i for i, w in enumerate(lexicon)}
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 12), np.int64)
    y = np.zeros(count, np.int64)
    for row in range(count):
        pos, neg = rng.integers(0, 4), rng.integers(0, 4)
        while pos == neg:
            neg = rng.integers(0, 4)
        words = [*rng.choice(POSITIVE, pos), *rng.choice(NEGATIVE, neg)]
        words += list(rng.choice(FILLER, 12 - len(words)))
        rng.shuffle(words)
        x[row] = [ids[w] for w in words]
        y[row] = int(pos > neg)
    return x, y


@pytest.fixture(scope="session")
def text_encoder(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The encoder, trained for 80 steps on 2,000 sentences; 600 held out."""
    x, y = _sentences(2600, seed=1)
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("text-encoder")
    model = _module(ENCODER_SOURCE, "Encoder", tmp)()
    _train(model, x[:2000], y[:2000], steps=80, lr=1e-2)
    return _save(tmp, model, ENCODER_SOURCE, "Encoder", "tokens", x, y, 2000)
