"""Which paper has a runnable implementation, what its headline comparison runs, and what it claims.

Torch-free on purpose: `kb validate` imports this module to check each paper record's `implementation`
field, and `kb reproduce` reads it to reject unknown ids before loading anything heavy.

Adding a method: write `reference_impls/<method>.py` exposing `Config` (a frozen pydantic model),
`NEEDS_CALIBRATION` (bool) and `prune(model, calib, config, *, progress) -> None`; add it to `METHODS`; add a
`PaperSpec` to `PAPERS` when it is a paper's headline method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# The knowledge base's paper record ids (papers/*.yaml), with or without an implementation.
KNOWN_PAPERS: tuple[str, ...] = (
    "sparsegpt", "wanda", "essential-sparsity", "owl", "ria", "dsnot", "besa", "llm-surgeon",
    "sparse-scaling-laws", "flash-llm", "bitnet-b158", "llm-pruner", "loraprune", "sheared-llama",
    "compresso", "k-prune", "minitron", "minitron-approach", "coupled-components", "deeper-layers",
    "shortened-llama", "shortgpt", "llm-streamline", "what-matters", "reassessing-layer-pruning",
    "deeper-look-depth", "heterogeneous-sublayers", "h2o", "keyformer",
)  # fmt: skip

# Pruning methods `kb prune` and the harness can run: name -> importable module.
METHODS: dict[str, str] = {
    "magnitude": "reference_impls.magnitude",
    "wanda": "reference_impls.wanda",
    "sparsegpt": "reference_impls.sparsegpt",
}


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _wanda_claim(ppl: Mapping[str, float]) -> bool:
    return _finite(ppl["wanda"], ppl["magnitude"]) and ppl["wanda"] < 0.5 * ppl["magnitude"]


def _sparsegpt_claim(ppl: Mapping[str, float]) -> bool:
    return (
        _finite(ppl["sparsegpt"], ppl["wanda"], ppl["magnitude"])
        and ppl["sparsegpt"] < 0.7 * ppl["magnitude"]
        and ppl["sparsegpt"] <= 1.1 * ppl["wanda"]
    )


@dataclass(frozen=True)
class PaperSpec:
    """A paper's runnable headline comparison.

    `methods` run in order after the dense baseline, all at the same sparsity target; `check` receives
    `{"dense": ppl, method: ppl, ...}` and says whether `claim` holds on this run.
    """

    paper: str
    implementation: str  # module path relative to the repository root
    method: str  # the paper's own method (receives `--set` options)
    methods: tuple[str, ...]
    claim: str
    check: Callable[[Mapping[str, float]], bool]


PAPERS: dict[str, PaperSpec] = {
    "wanda": PaperSpec(
        paper="wanda",
        implementation="reference_impls/wanda.py",
        method="wanda",
        methods=("magnitude", "wanda"),
        claim="Wanda's perplexity is less than half of magnitude pruning's at the same sparsity "
        "(Wanda paper: magnitude collapses, Wanda stays near dense)",
        check=_wanda_claim,
    ),
    "sparsegpt": PaperSpec(
        paper="sparsegpt",
        implementation="reference_impls/sparsegpt.py",
        method="sparsegpt",
        methods=("magnitude", "wanda", "sparsegpt"),
        claim="SparseGPT's perplexity is below 0.7x magnitude's and at most 1.1x Wanda's at the same sparsity "
        "(the Wanda paper reports SparseGPT ahead of or level with Wanda on smaller models)",
        check=_sparsegpt_claim,
    ),
}


def runnable_papers() -> dict[str, str]:
    """Paper id -> module implementing it, relative to the repository root."""
    return {pid: spec.implementation for pid, spec in PAPERS.items()}


def run_command(paper: str) -> str | None:
    """How to run a paper's reproduction (for its record / page), or None when it has no implementation."""
    return f"kb reproduce {paper} --model tiny-llama" if paper in PAPERS else None


def paper_spec(paper: str) -> PaperSpec:
    """The spec of a runnable paper; a `KBError` (exit 2) naming the alternatives otherwise."""
    from kb.errors import KBError

    if paper in PAPERS:
        return PAPERS[paper]
    runnable = ", ".join(sorted(PAPERS))
    if paper in KNOWN_PAPERS:
        raise KBError(f"paper {paper!r} has no runnable implementation yet; runnable papers: {runnable}")
    raise KBError(f"unknown paper {paper!r}; runnable papers: {runnable}")


def method_module(method: str) -> str:
    from kb.errors import KBError

    if method not in METHODS:
        raise KBError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[method]
