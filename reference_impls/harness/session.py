"""What one process shares across the papers and sweeps it runs (`kb reproduce --all`, `kb sweep`).

Every comparison starts from the same dense model, so a process that runs several of them keeps:
- the loaded dense model and tokenizer, per (model, device, seed); runs still take fresh copies by reloading;
- the corpus and its token streams, per data scope (model, dataset, nsamples, seqlen, eval_tokens, seed);
- measurements of the dense model (perplexity, the probe, CPU speed, the full-cache evaluation), per data scope
  and the settings each depends on, so two papers with the same data measure their baseline once;
- the dense-model statistics methods keep through `Context.dense_statistic` (Block Influence, outlier ratios),
  one dictionary per data scope: the calibration tensor is the same object for every paper of a scope, so the
  keys methods already use (which include the tensor's address) stay valid, and scopes never mix;
- finished runs, per data scope and everything a run depends on (method, validated config, what is measured):
  a method run again on the same dense model and data gives the same result, so it is reused and logged as such.
Speed ratios stay meaningful: every dense measurement shared here was taken in this process, with its threads.

`computed` counts what was actually computed per kind ("model", "data", "ppl", "probe", "speed", "cache", "run"),
which the tests read to check that sharing happens.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .data import Corpus, TokenData, load_corpus, token_data
from .models import LoadedModel, load_model

Log = Callable[[str], None]


@dataclass
class Session:
    corpora: dict[str, Corpus] = field(default_factory=dict)
    models: dict[Hashable, LoadedModel] = field(default_factory=dict)
    data: dict[Hashable, TokenData] = field(default_factory=dict)
    measured: dict[Hashable, tuple[Any, float]] = field(default_factory=dict)
    stats: dict[Hashable, dict[Any, Any]] = field(default_factory=dict)
    computed: Counter[str] = field(default_factory=Counter)

    def memo(self, kind: str, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, float]:
        """(value, seconds it took when it was computed): `compute()` once per (kind, key)."""
        full = (kind, key)
        if full not in self.measured:
            start = time.perf_counter()
            value = compute()
            self.measured[full] = (value, time.perf_counter() - start)
            self.computed[kind] += 1
        return self.measured[full]

    def has(self, kind: str, key: Hashable) -> bool:
        return (kind, key) in self.measured

    def corpus(self, dataset: str) -> Corpus:
        if dataset not in self.corpora:
            self.corpora[dataset] = load_corpus(dataset)
        return self.corpora[dataset]

    def model(self, name: str, device: str | None, seed: int, log: Log) -> LoadedModel:
        key = (name, device, seed)
        if key not in self.models:
            start = time.perf_counter()
            loaded = load_model(name, device, seed=seed)
            log(f"kb: loaded {name} from {loaded.source} in {time.perf_counter() - start:.1f} s")
            self.models[key] = loaded
            self.computed["model"] += 1
        return self.models[key]

    def tokens(self, scope: Hashable, make: Callable[[], TokenData]) -> TokenData:
        if scope not in self.data:
            self.data[scope] = make()
            self.computed["data"] += 1
        return self.data[scope]

    def dense_stats(self, scope: Hashable) -> dict[Any, Any]:
        return self.stats.setdefault(scope, {})


def drawn_seed(options: Any) -> int:
    """The seed of a run's calibration draw and of its methods' own randomness: `calibration_seed` when a further
    draw sets it, else `--seed` (which alone seeds a random model)."""
    return int(options.seed if options.calibration_seed is None else options.calibration_seed)


def eval_scope(options: Any) -> tuple[Any, ...]:
    """What the dense model and its evaluation data depend on: the same in every calibration draw."""
    return (options.model, options.device, options.seed, options.dataset, options.nsamples, options.seqlen,
            options.eval_tokens)  # fmt: skip


def data_scope(options: Any) -> tuple[Any, ...]:
    """What the token streams of a run depend on, the calibration draw included."""
    return (*eval_scope(options), drawn_seed(options))


def load_tokens(session: Session, options: Any, loaded: LoadedModel) -> TokenData:
    corpus = session.corpus(options.dataset)

    def make() -> TokenData:
        return token_data(loaded.tokenizer, corpus, nsamples=options.nsamples, seqlen=options.seqlen,
                          eval_tokens=options.eval_tokens, seed=drawn_seed(options))  # fmt: skip

    return session.tokens(data_scope(options), make)
