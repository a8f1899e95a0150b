"""Shared fixtures: the real repository root and throw-away knowledge bases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def tmp_kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty knowledge base (real vocabulary, no papers) selected through KB_ROOT."""
    shutil.copytree(ROOT / "concepts", tmp_path / "concepts")
    (tmp_path / "papers").mkdir()
    (tmp_path / "challenge").mkdir()
    monkeypatch.setenv("KB_ROOT", str(tmp_path))
    return tmp_path
