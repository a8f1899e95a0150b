"""What the harness can run: one spec per method, one spec per runnable paper, and each paper's claim.

Torch-free on purpose: `kb validate` reads it to check every record's `implementation:` field, and the
command line reads it for help text and to reject bad input before anything heavy is imported.

- A `MethodSpec` names a method, the module that implements it, its kind (which decides the invariants
  the harness checks after it ran), whether it needs calibration data, and which target options of the
  command line apply to it (`sparsity`, `pattern`, `layers`, `kv_budget`, `params`; their bounds are one table,
  `specs.TARGET_BOUNDS`, checked by `check_target`). The method's own knobs and their defaults live in the
  module's `Config` class.
- A `PaperSpec` is a paper's headline comparison: a list of labelled `Run`s (method + fixed options) run
  after the dense baseline, each from a fresh copy of the dense model; paper-level defaults (its target,
  data budget, metrics) that the command line may override; and the claim with the check that decides it
  from every run's metrics.
- The knowledge base's record ids are read from `papers/*.yaml` (`paper_ids`); only the runnable papers have
  a claim module.

Layout: `specs` holds the shapes; every runnable paper has its own claim module, `reference_impls/claims/<id>.py`
(the record id with `_` for `-`), with its `PaperSpec` and the `MethodSpec`s of the methods it owns; methods
that belong to no paper are in `claims/baselines.py`, and the logic claims share in `claims/_kit.py`.
`CLAIMS` below lists the claim modules, one entry each; this module imports them, joins them into `METHODS`
and `PAPERS` and answers look-ups, including which files a result depends on (`code_files`, `paper_code`:
the content hash stored in every result). `freshness` compares the committed results with today's code for
`kb build --check`. No module here imports a method's implementation (or torch).

Adding a paper: see "Add a paper of any kind" in the README.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from pathlib import Path

from kb.codehash import code_version
from kb.errors import KBError
from kb.results import CodeVersion

from .specs import (
    TARGET_BOUNDS,
    TARGETS,
    MethodSpec,
    Metric,
    PaperSpec,
    Results,
    Run,
    Target,
    Verdict,
    check_target,
    check_targets,
    parse_pattern,
    refuse_set_targets,
    target_flag,
)

__all__ = [
    "CLAIMS",
    "CLAIM_KIT",
    "METHODS",
    "PAPERS",
    "SPECS",
    "TARGETS",
    "TARGET_BOUNDS",
    "MethodSpec",
    "Metric",
    "PaperSpec",
    "Results",
    "Run",
    "Target",
    "Verdict",
    "check_target",
    "check_targets",
    "claim_file",
    "code_files",
    "code_root",
    "method_spec",
    "methods_help",
    "paper_code",
    "paper_ids",
    "paper_methods",
    "paper_spec",
    "papers_help",
    "parse_pattern",
    "refuse_set_targets",
    "run_command",
    "runnable_papers",
    "savable_method",
    "sweep_code",
    "target_flag",
]  # fmt: skip

# The modules of `reference_impls/claims/`, one entry per runnable paper (its record id with `_` for `-`) and
# the shared baselines. Adding a paper adds one line here; no result's code hash covers this list.
CLAIMS: tuple[str, ...] = (
    "baselines",
    # weight sparsity and allocation
    "wanda",
    "sparsegpt",
    "owl",
    "essential_sparsity",
    "ria",
    "dsnot",
    "besa",
    "llm_surgeon",
    "pruner_zero",
    "alphapruning",
    "oats",
    "alps",
    # depth
    "shortgpt",
    "deeper_layers",
    "shortened_llama",
    "llm_streamline",
    "what_matters",
    "reassessing_layer_pruning",
    "deeper_look_depth",
    "heterogeneous_sublayers",
    "sleb",
    "blockpruner",
    "laco",
    # width
    "llm_pruner",
    "sheared_llama",
    "compresso",
    "minitron_approach",
    "loraprune",
    "k_prune",
    "minitron",
    "coupled_components",
    "2ssp",
    "flap",
    # KV-cache eviction
    "h2o",
    "keyformer",
    "snapkv",
    "pyramidkv",
    "streamingllm",
    # honest stand-ins: a kernel, a scaling law, training from scratch
    "sparse_scaling_laws",
    "flash_llm",
    "bitnet_b158",
)
_CLAIMS_DIR = "reference_impls/claims"
_REGISTRY = "reference_impls/registry"


def _claim_module(name: str) -> str:
    return f"{_CLAIMS_DIR}/{name}.py"


def _join() -> tuple[dict[str, MethodSpec], dict[str, PaperSpec], dict[str, str]]:
    """Every claim module's methods and paper, and the claim module (a file) that declares each method."""
    methods: dict[str, MethodSpec] = {}
    papers: dict[str, PaperSpec] = {}
    declared: dict[str, str] = {}
    for name in CLAIMS:
        module = importlib.import_module(f"reference_impls.claims.{name}")
        specs: tuple[MethodSpec, ...] = module.METHODS
        for m in specs:
            if m.name in methods:
                raise RuntimeError(
                    f"method {m.name!r} is declared twice: {declared[m.name]}, claims/{name}.py"
                )
            methods[m.name] = m
            declared[m.name] = _claim_module(name)
        paper: PaperSpec | None = getattr(module, "PAPER", None)
        if paper is None:
            continue
        if paper.paper.replace("-", "_") != name:
            raise RuntimeError(
                f"claims/{name}.py declares paper {paper.paper!r}: name it after the record id"
            )
        papers[paper.paper] = paper  # one module per id: no paper can be declared twice
    return methods, papers, declared


METHODS, PAPERS, _DECLARED_IN = _join()


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


# ---- the code a result depends on -------------------------------------------------------------
# A result depends on the modules of its methods and everything they import inside `reference_impls`, on the
# harness modules that run and measure every comparison (and what they import), and on its declarations: the
# paper's own claim module, the claim modules that declare the methods its runs use (`claims/baselines.py` for
# magnitude, `claims/wanda.py` for the Wanda arm of OWL), what they import (`claims/_kit.py`) and the registry's
# shapes (`registry/specs.py`). A sweep depends on the same minus a paper's claim. Imports are read statically (no
# module is executed), so the check stays torch-free. The two modules that join the claims (this one, with its
# `CLAIMS` list, and `claims/__init__.py`) are neither followed nor counted: a new paper (a claim module plus one
# line in `CLAIMS`), another paper's claim, a primitive nobody here imports or a new method module changes nothing
# a result ran, so it leaves the result fresh.
MEASURING = (
    "reference_impls/harness/runner.py",
)  # the orchestrator: its imports bring data, metrics, probe...
SPECS = f"{_REGISTRY}/specs.py"
CLAIM_KIT = f"{_CLAIMS_DIR}/_kit.py"
_JOINS = frozenset({f"{_REGISTRY}/__init__.py", f"{_CLAIMS_DIR}/__init__.py"})


def _imported_files(root: Path, rel: str) -> set[str]:
    """Files inside `reference_impls/` that the module `rel` imports (absolute or relative), read with `ast`."""
    path = root / rel
    if not path.is_file():
        return set()
    tree = ast.parse(path.read_bytes(), filename=rel)
    package = rel.rsplit("/", 1)[0].split("/")  # the package that holds the module
    if rel.endswith("/__init__.py"):
        package = rel[: -len("/__init__.py")].split("/")
    names: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            names.append(mod)
            names += [[*mod, a.name] for a in node.names]  # `from . import wanda` names a module
    found = set()
    for parts in names:
        if not parts or parts[0] != "reference_impls":
            continue
        for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
            if (root / candidate).is_file():
                found.add(candidate)
    return found


def _closure(root: Path, start: Iterable[str]) -> set[str]:
    """`start` and every file it imports inside `reference_impls/`, transitively, except the joining modules."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        if rel in _JOINS:
            continue  # they import every claim module: a result counts only its own (added by the caller)
        todo.extend(_imported_files(root, rel) - seen)
    return seen - _JOINS


def code_root() -> Path:
    """The checkout this package was imported from: what a run actually executed."""
    return Path(__file__).resolve().parents[2]


def paper_methods(paper: str) -> list[str]:
    """Every method of a paper's comparison, the runs `--all-runs` adds included."""
    spec = paper_spec(paper)
    return sorted({spec.method, *(r.method for r in spec.runs)})


def claim_file(paper: str) -> str:
    """The claim module of a runnable paper (relative to the repository root): `reference_impls/claims/<id>.py`."""
    return _claim_module(paper_spec(paper).paper.replace("-", "_"))


def code_files(root: Path, methods: Iterable[str], paper: str | None = None) -> list[str]:
    """The files (relative to `root`) a run of these methods depends on, with the paper's claim if given."""
    names = set(methods)
    start = {"reference_impls/__init__.py", *MEASURING, SPECS, *(method_spec(m).file for m in names)}
    start.update(_DECLARED_IN[m] for m in names if m in _DECLARED_IN)  # the claim modules declaring them
    if paper is not None:
        start.update((claim_file(paper), CLAIM_KIT))
    return sorted(_closure(root, start))


def paper_code(paper: str, root: Path | None = None) -> CodeVersion:
    """The content hash of what `kb reproduce <paper>` runs, read under `root` (default: this checkout)."""
    base = root or code_root()
    return code_version(base, code_files(base, paper_methods(paper), paper))


def sweep_code(methods: Iterable[str], root: Path | None = None) -> CodeVersion:
    base = root or code_root()
    return code_version(base, code_files(base, methods))
