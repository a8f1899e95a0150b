"""What the harness can run: one spec per method, one spec per runnable paper, and each paper's claim.

Torch-free on purpose: `kb validate` reads it to check every record's `implementation:` field, and the
command line reads it for help text and to reject bad input before anything heavy is imported.

- A `MethodSpec` names a method, the module that implements it, its kind (which decides the invariants
  the harness checks after it ran), whether it needs calibration data, and which target options of the
  command line apply to it (`sparsity`, `pattern`, `layers`, `kv_budget`). The method's own knobs and their defaults
  live in the module's `Config` class.
- A `PaperSpec` is a paper's headline comparison: a list of labelled `Run`s (method + fixed options) run
  after the dense baseline, each from a fresh copy of the dense model; paper-level defaults (its target,
  data budget, metrics) that the command line may override; and the claim with the check that decides it
  from every run's metrics.
- The list of paper ids is read from `papers/*.yaml`, never typed here.

Adding a paper: see "Add a paper of any kind" in the README.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kb.errors import KBError

if TYPE_CHECKING:
    from kb.results import Kind, Metrics

Target = Literal["sparsity", "pattern", "layers", "kv_budget"]
TARGETS: tuple[str, ...] = (
    "sparsity",
    "pattern",
    "layers",
    "kv_budget",
)  # kv_budget: KV cache / prompt length
Metric = Literal["ppl", "probe", "speed", "cache"]  # cache: the long-context KV-cache evaluation


@dataclass(frozen=True)
class MethodSpec:
    name: str
    module: str  # importable module exposing `Config` and `prune`
    kind: Kind
    summary: str  # one line for `--help`
    needs_calibration: bool
    targets: tuple[Target, ...] = ()  # command-line target options that apply
    paper: str | None = None  # the record id when the method is a paper's own

    @property
    def file(self) -> str:
        return self.module.replace(".", "/") + ".py"


@dataclass(frozen=True)
class Run:
    """One arm of a comparison: `method` with `options` fixed for this arm (they win over `--set`)."""

    label: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    speed: bool = False  # measure CPU prefill/decode speed against dense for this arm
    extra: bool = False  # context the claim does not use: runs only with `kb reproduce --all-runs`


class Results:
    """Every run's metrics by label, as a claim check sees them."""

    def __init__(self, metrics: Mapping[str, Metrics]) -> None:
        self._metrics = dict(metrics)

    def __getitem__(self, label: str) -> Metrics:
        return self._metrics[label]

    def labels(self, prefix: str = "") -> list[str]:
        return [k for k in self._metrics if k.startswith(prefix)]

    def ppl(self, label: str) -> float:
        value = self._metrics[label].ppl
        return math.nan if value is None else float(value)

    def cache_ppl(self, label: str) -> float:
        """Continuation perplexity of the KV-cache evaluation (the dense run: full cache)."""
        cache = self._metrics[label].cache
        return math.nan if cache is None else float(cache.ppl)

    def acc(self, label: str) -> float:
        probe = self._metrics[label].probe
        return math.nan if probe is None else float(probe.acc_norm)

    def mean(self, labels: Sequence[str], value: Callable[[str], float]) -> float:
        values = [value(label) for label in labels]
        return sum(values) / len(values) if values else math.nan


Verdict = tuple[bool, str]


@dataclass(frozen=True)
class PaperSpec:
    paper: str  # record id
    method: str  # the paper's own method: `--set` options go to its runs
    runs: tuple[Run, ...]  # after the dense baseline
    claim: str  # may name target options, e.g. "{layers}", filled in from the run's target
    check: Callable[[Results], Verdict]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # targets and data options the CLI may override
    metrics: tuple[Metric, ...] = ("ppl",)

    @property
    def implementation(self) -> str:
        return METHODS[self.method].file

    def statement(self, target: Mapping[str, Any]) -> str:
        return self.claim.format(**{t: target.get(t) for t in TARGETS})


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


# ---- methods ----------------------------------------------------------------------------------
_METHOD_LIST = (
    MethodSpec("magnitude", "reference_impls.magnitude", "weight-sparsity",
               "smallest |W| per matrix (baseline, no data)", False, ("sparsity", "pattern")),
    MethodSpec("wanda", "reference_impls.wanda", "weight-sparsity",
               "|W| x input-feature norm, per output row", True, ("sparsity", "pattern"), paper="wanda"),
    MethodSpec("sparsegpt", "reference_impls.sparsegpt", "weight-sparsity",
               "second-order (OBS) mask and weight update", True, ("sparsity", "pattern"), paper="sparsegpt"),
    MethodSpec("owl", "reference_impls.owl", "allocation",
               "outlier-weighted per-layer sparsity, then Wanda or SparseGPT", True, ("sparsity",), paper="owl"),
    MethodSpec("shortgpt", "reference_impls.shortgpt", "depth",
               "remove the layers with the lowest Block Influence", True, ("layers",), paper="shortgpt"),
    MethodSpec("window", "reference_impls.kv_window", "kv-cache",
               "KV cache of the most recent tokens, optionally plus StreamingLLM's first-token sinks (baseline)",
               False, ("kv_budget",)),
    MethodSpec("h2o", "reference_impls.h2o", "kv-cache",
               "KV cache of heavy hitters (accumulated attention) plus recent tokens", False, ("kv_budget",),
               paper="h2o"),
    MethodSpec("keyformer", "reference_impls.keyformer", "kv-cache",
               "KV cache of key tokens (accumulated Gumbel-softmax score) plus recent tokens", False, ("kv_budget",),
               paper="keyformer"),
    MethodSpec("llm-pruner", "reference_impls.llm_pruner", "width",
               "remove KV-head groups and MLP channels by Taylor importance, optional LoRA", True,
               paper="llm-pruner"),
)  # fmt: skip
METHODS: dict[str, MethodSpec] = {m.name: m for m in _METHOD_LIST}


# ---- claims -----------------------------------------------------------------------------------
def _wanda_claim(r: Results) -> Verdict:
    w, m = r.ppl("wanda"), r.ppl("magnitude")
    return _finite(w, m) and w < 0.5 * m, f"wanda {w:.2f} vs 0.5 x magnitude {0.5 * m:.2f}"


def _sparsegpt_claim(r: Results) -> Verdict:
    s, w, m = r.ppl("sparsegpt"), r.ppl("wanda"), r.ppl("magnitude")
    holds = _finite(s, w, m) and s < 0.7 * m and s <= 1.1 * w
    return holds, f"sparsegpt {s:.2f} vs 0.7 x magnitude {0.7 * m:.2f} and 1.1 x wanda {1.1 * w:.2f}"


def _owl_claim(r: Results) -> Verdict:
    o, w = r.ppl("owl-wanda"), r.ppl("wanda")
    return _finite(o, w) and o < 0.8 * w, f"owl-wanda {o:.2f} vs 0.8 x uniform wanda {0.8 * w:.2f}"


def _shortgpt_claim(r: Results) -> Verdict:
    randoms = r.labels("random-")
    low, high = r.ppl("lowest-bi"), r.ppl("highest-bi")
    rand = r.mean(randoms, r.ppl)
    acc_low, acc_high, acc_rand = r.acc("lowest-bi"), r.acc("highest-bi"), r.mean(randoms, r.acc)
    ppl_ok = _finite(low, rand, high) and low < rand and low < high
    acc_ok = _finite(acc_low, acc_rand, acc_high) and acc_low > acc_rand and acc_low > acc_high
    best = min((r.ppl(label) for label in randoms), default=math.nan)
    reason = (
        f"ppl lowest-BI {low:.2f} vs random mean {rand:.2f} (best draw {best:.2f}) and highest-BI {high:.2f}; "
        f"probe acc_norm lowest-BI {acc_low:.3f} vs random mean {acc_rand:.3f} and highest-BI {acc_high:.3f}"
    )
    return ppl_ok and acc_ok, reason


def _h2o_claim(r: Results) -> Verdict:
    h, w, full = r.cache_ppl("h2o"), r.cache_ppl("window"), r.cache_ppl("dense")
    holds = _finite(h, w, full) and h < w and h <= 1.5 * full
    return holds, (f"continuation ppl h2o {h:.2f} vs window {w:.2f} and 1.5 x full cache {1.5 * full:.2f} "
                   f"(sink {r.cache_ppl('sink'):.2f}, full {full:.2f})")  # fmt: skip


def _keyformer_claim(r: Results) -> Verdict:
    k, w, full, h = r.cache_ppl("keyformer"), r.cache_ppl("window"), r.cache_ppl("dense"), r.cache_ppl("h2o")
    holds = _finite(k, w, full) and k <= w and k <= 1.1 * full
    reason = (
        f"continuation ppl keyformer {k:.2f} vs window {w:.2f} and 1.1 x full cache {1.1 * full:.2f}; "
        f"reported, not asserted: h2o {h:.2f} (sink {r.cache_ppl('sink'):.2f}, full {full:.2f})"
    )
    return holds, reason


def _llm_pruner_claim(r: Results) -> Verdict:
    t, l2, rnd, lora = r.ppl("taylor"), r.ppl("l2"), r.ppl("random"), r.ppl("taylor-lora")
    acc_t, acc_l2, acc_rnd = r.acc("taylor"), r.acc("l2"), r.acc("random")
    sizes = {r[label].size.params_total for label in ("taylor", "l2", "random", "taylor-lora")}
    same = len(sizes) == 1
    ppl_ok = _finite(t, l2, rnd) and t < l2 and t < rnd
    acc_ok = _finite(acc_t, acc_l2, acc_rnd) and acc_t > acc_l2 and acc_t > acc_rnd
    lora_ok = _finite(lora, t) and lora < t
    reason = (
        f"ppl taylor {t:.2f} vs l2 {l2:.2f} and random {rnd:.2f}; probe acc_norm taylor {acc_t:.3f} vs l2 "
        f"{acc_l2:.3f} and random {acc_rnd:.3f}; after LoRA {lora:.2f} vs {t:.2f}; "
        + ("same parameter count in every arm" if same else f"parameter counts differ: {sorted(sizes)}")
    )
    return same and ppl_ok and acc_ok and lora_ok, reason


# ---- papers -----------------------------------------------------------------------------------
_PAPER_LIST: tuple[PaperSpec, ...] = (
    PaperSpec(
        paper="wanda",
        method="wanda",
        runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda")),
        claim="Wanda's perplexity is less than half of magnitude pruning's at the same sparsity "
        "(Wanda paper: magnitude collapses, Wanda stays near dense)",
        check=_wanda_claim,
        defaults={"sparsity": 0.5},
    ),
    PaperSpec(
        paper="sparsegpt",
        method="sparsegpt",
        runs=(Run("magnitude", "magnitude"), Run("wanda", "wanda"), Run("sparsegpt", "sparsegpt")),
        claim="SparseGPT's perplexity is below 0.7x magnitude's and at most 1.1x Wanda's at the same sparsity "
        "(the Wanda paper reports SparseGPT ahead of or level with Wanda on smaller models)",
        check=_sparsegpt_claim,
        defaults={"sparsity": 0.5},
    ),
    PaperSpec(
        paper="owl",
        method="owl",
        runs=(
            Run("magnitude", "magnitude"),
            Run("wanda", "wanda"),
            Run("owl-wanda", "owl", {"base": "wanda"}),
            Run("sparsegpt", "sparsegpt", extra=True),  # the paper's second base; not in the claim
            Run("owl-sparsegpt", "owl", {"base": "sparsegpt"}, extra=True),
        ),
        claim="At {sparsity:.0%} sparsity, Wanda with OWL's outlier-weighted per-layer ratios reaches a "
        "perplexity below 0.8x that of Wanda at the same uniform ratio in every layer "
        "(OWL paper: 85.8 -> 24.6 on LLaMA-7B)",
        check=_owl_claim,
        defaults={"sparsity": 0.7},
    ),
    PaperSpec(
        paper="shortgpt",
        method="shortgpt",
        runs=(
            Run("lowest-bi", "shortgpt", {"selection": "lowest"}, speed=True),
            *(Run(f"random-{i}", "shortgpt", {"selection": "random", "seed": i}) for i in range(5)),
            Run("highest-bi", "shortgpt", {"selection": "highest"}),
        ),
        claim="Removing the {layers} layers with the lowest Block Influence gives lower perplexity and higher "
        "multiple-choice probe accuracy than removing {layers} random layers (mean of 5 draws) or the "
        "{layers} highest-BI layers (ShortGPT: low-BI layers are redundant)",
        check=_shortgpt_claim,
        defaults={"layers": 6},
        metrics=("ppl", "probe"),
    ),
    PaperSpec(
        paper="llm-pruner",
        method="llm-pruner",
        runs=(
            Run("taylor", "llm-pruner", {"importance": "taylor"}, speed=True),
            Run("l2", "llm-pruner", {"importance": "l2"}),
            Run("random", "llm-pruner", {"importance": "random"}),
            Run("taylor-lora", "llm-pruner", {"importance": "taylor", "recovery_steps": 20}),
        ),
        claim="Removing a quarter of the KV-head groups and MLP channels of the middle layers (the same parameter "
        "count in every arm), groups chosen by first-order Taylor importance give lower perplexity and higher "
        "multiple-choice probe accuracy than groups chosen by L2 magnitude or at random, and 20 LoRA steps lower "
        "the perplexity further (LLM-Pruner on LLaMA-7B at 20% fewer parameters, before tuning: WikiText-2 perplexity "
        "19.1 with Taylor groups against 27.5 random and 582 L2, as quoted in the record)",
        check=_llm_pruner_claim,
        defaults={"nsamples": 80, "seqlen": 128, "eval_tokens": 4096},
        metrics=("ppl", "probe"),
    ),
)
_KV_DATA = {"seqlen": 320, "eval_tokens": 2560}  # 8 windows of a 256-token prompt + 64-token continuation
_KV_BASELINES = (Run("window", "window"), Run("sink", "window", {"sink_tokens": 4}))
_PAPER_LIST += (
    PaperSpec(
        paper="h2o",
        method="h2o",
        runs=(*_KV_BASELINES, Run("h2o", "h2o")),
        claim="With a KV cache of {kv_budget:.0%} of the prompt (half heavy hitters, half recent tokens), H2O's "
        "continuation perplexity is below that of a window of the same number of recent tokens and at most 1.5x "
        "the full cache's (H2O paper: 20% of the cache keeps accuracy where the window alone collapses)",
        check=_h2o_claim,
        defaults={"kv_budget": 0.2, **_KV_DATA},
        metrics=("cache",),
    ),
    PaperSpec(
        paper="keyformer",
        method="keyformer",
        runs=(*_KV_BASELINES, Run("h2o", "h2o"), Run("keyformer", "keyformer")),
        claim="With a KV cache of {kv_budget:.0%} of the prompt (30% recent tokens, 70% key tokens), Keyformer's "
        "continuation perplexity is at most that of a window of the same size and within 10% of the full cache's "
        "(Keyformer paper: 50% of the prompt cache keeps about 99% of the baseline accuracy); Keyformer vs H2O at "
        "the same budget is reported, not asserted",
        check=_keyformer_claim,
        defaults={"kv_budget": 0.5, **_KV_DATA},
        metrics=("cache",),
    ),
)
PAPERS: dict[str, PaperSpec] = {p.paper: p for p in _PAPER_LIST}


# ---- look-ups ---------------------------------------------------------------------------------
def paper_ids(root: Path | None = None) -> list[str]:
    """The knowledge base's record ids (file names of `papers/*.yaml`)."""
    from kb.paths import repo_root

    return sorted(p.stem for p in ((root or repo_root()) / "papers").glob("*.yaml"))


def runnable_papers() -> dict[str, str]:
    """Paper id -> file implementing its method, relative to the repository root."""
    return {pid: spec.implementation for pid, spec in PAPERS.items()}


def run_command(paper: str) -> str | None:
    """How to run a paper's reproduction, or None when it has no implementation."""
    return f"kb reproduce {paper} --model tiny-llama" if paper in PAPERS else None


def paper_spec(paper: str) -> PaperSpec:
    """The spec of a runnable paper; a `KBError` (exit 2) naming the alternatives otherwise."""
    if paper in PAPERS:
        return PAPERS[paper]
    runnable = ", ".join(sorted(PAPERS))
    if paper in paper_ids():
        raise KBError(f"paper {paper!r} has no runnable implementation yet; runnable papers: {runnable}")
    raise KBError(f"unknown paper {paper!r}; runnable papers: {runnable}")


def method_spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise KBError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[method]


def savable_method(method: str) -> MethodSpec:
    """The spec of a method whose result `kb prune` can save; a `KBError` (exit 2) for a KV-cache policy."""
    spec = method_spec(method)
    if spec.kind == "kv-cache":
        where = f"kb reproduce {spec.paper}" if spec.paper else "kb reproduce h2o or keyformer"
        raise KBError(f"{method} is a KV-cache eviction policy: it changes no weight, so there is no pruned model to "
                      f"save; evaluate it with {where}")  # fmt: skip
    return spec


def methods_help() -> str:
    """One line per method for `kb prune --help`."""
    return "; ".join(f"{m.name} ({m.kind}: {m.summary})" for m in METHODS.values())


def papers_help() -> str:
    return ", ".join(sorted(PAPERS))
