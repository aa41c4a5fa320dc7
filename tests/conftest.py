"""Shared fixtures: the real image data beside the project, and small real-photo folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("WGAN_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
FLOWERS = SHARED_DATA / "flowers-128"
HYMENOPTERA = SHARED_DATA / "hymenoptera"
LSUN_LMDB = SHARED_DATA / "lsun-bedroom-64" / "bedroom_train_lmdb"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (it lives in ../shared/data)")
    return path


@pytest.fixture
def flowers() -> Path:
    return need(FLOWERS)


@pytest.fixture
def hymenoptera() -> Path:
    return need(HYMENOPTERA)


@pytest.fixture
def lsun_lmdb() -> Path:
    return need(LSUN_LMDB)


@pytest.fixture
def small_flowers(tmp_path, flowers) -> Path:
    """A copy of 40 real flower photos (8 per class) that a test may damage."""
    out = tmp_path / "flowers"
    for folder in sorted(flowers.iterdir()):
        (out / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[:8]:
            shutil.copy(f, out / folder.name / f.name)
    return out


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """Keep LMDB key caches out of the user's home during tests."""
    monkeypatch.setenv("WGAN_CACHE_DIR", str(tmp_path / "cache"))
