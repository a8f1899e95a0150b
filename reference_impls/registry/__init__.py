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

One file per family holds its methods, claims and papers (`sparsity`, `depth`, `width`, `kvcache`, `standins`);
`specs` holds the shapes. This module joins the families and answers look-ups.

Adding a paper: see "Add a paper of any kind" in the README.
"""

from __future__ import annotations

from pathlib import Path

from kb.errors import KBError

from . import depth, kvcache, sparsity, standins, width
from .specs import TARGETS, MethodSpec, Metric, PaperSpec, Results, Run, Target, Verdict

__all__ = [
    "METHODS",
    "PAPERS",
    "TARGETS",
    "MethodSpec",
    "Metric",
    "PaperSpec",
    "Results",
    "Run",
    "Target",
    "Verdict",
    "method_spec",
    "methods_help",
    "paper_ids",
    "paper_spec",
    "papers_help",
    "run_command",
    "runnable_papers",
    "savable_method",
]  # fmt: skip

_FAMILIES = (sparsity, depth, width, kvcache, standins)


def _join() -> tuple[dict[str, MethodSpec], dict[str, PaperSpec]]:
    methods: dict[str, MethodSpec] = {}
    papers: dict[str, PaperSpec] = {}
    for family in _FAMILIES:
        for m in family.METHODS:
            if m.name in methods:
                raise RuntimeError(f"method {m.name!r} is registered twice ({family.__name__})")
            methods[m.name] = m
        for p in family.PAPERS:
            if p.paper in papers:
                raise RuntimeError(f"paper {p.paper!r} is registered twice ({family.__name__})")
            papers[p.paper] = p
    return methods, papers


METHODS, PAPERS = _join()


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
    """The spec of a method whose result `kb prune` can save; a `KBError` (exit 2) for a KV-cache policy or a
    training stand-in (neither changes the model's weights)."""
    spec = method_spec(method)
    if spec.kind == "kv-cache":
        where = f"kb reproduce {spec.paper}" if spec.paper else "kb reproduce h2o or keyformer"
        raise KBError(f"{method} is a KV-cache eviction policy: it changes no weight, so there is no pruned model to "
                      f"save; evaluate it with {where}")  # fmt: skip
    if spec.kind == "training":
        raise KBError(f"{method} trains its own small models from scratch and leaves --model unchanged, so there is "
                      f"no pruned model to save; run it with kb reproduce {spec.paper or method}")  # fmt: skip
    return spec


def methods_help() -> str:
    """One line per method for `kb prune --help`."""
    return "; ".join(f"{m.name} ({m.kind}: {m.summary})" for m in METHODS.values())


def papers_help() -> str:
    return ", ".join(sorted(PAPERS))
