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
`specs` holds the shapes. This module joins the families and answers look-ups, including which files a result
depends on (`code_files`, `paper_code`: the content hash stored in every result); `freshness` compares the
committed results with today's code for `kb build --check`.

Adding a paper: see "Add a paper of any kind" in the README.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from kb.codehash import code_version
from kb.errors import KBError
from kb.results import CodeVersion

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
    "code_files",
    "code_root",
    "method_spec",
    "methods_help",
    "paper_code",
    "paper_ids",
    "paper_methods",
    "paper_spec",
    "papers_help",
    "run_command",
    "runnable_papers",
    "savable_method",
    "sweep_code",
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


# ---- the code a result depends on -------------------------------------------------------------
# A result depends on the modules of its methods and everything they import inside `reference_impls`, on the
# harness modules that run and measure every comparison (and what they import), and on its claim: the registry's
# shapes and the family file that holds the paper. Imports are read statically (no module is executed), so the
# check stays torch-free. Another family's file, a primitive nobody here imports or a new paper's module changes
# nothing a result ran, so it leaves the result fresh.
MEASURING = (
    "reference_impls/harness/runner.py",
)  # the orchestrator: its imports bring data, metrics, probe...
_REGISTRY = "reference_impls/registry"


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
            names += [[*mod, a.name] for a in node.names]  # `from . import depth` names a module
    found = set()
    for parts in names:
        if not parts or parts[0] != "reference_impls":
            continue
        for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
            if (root / candidate).is_file():
                found.add(candidate)
    return found


def _closure(root: Path, start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        if rel.startswith(_REGISTRY + "/"):
            continue  # the registry joins every family: only the claim's own files count (added by the caller)
        todo.extend(_imported_files(root, rel) - seen)
    return seen


def code_root() -> Path:
    """The checkout this package was imported from: what a run actually executed."""
    return Path(__file__).resolve().parents[2]


def paper_methods(paper: str) -> list[str]:
    """Every method of a paper's comparison, the runs `--all-runs` adds included."""
    spec = paper_spec(paper)
    return sorted({spec.method, *(r.method for r in spec.runs)})


def code_files(root: Path, methods: Iterable[str], paper: str | None = None) -> list[str]:
    """The files (relative to `root`) a run of these methods depends on, with the paper's claim if given."""
    start = {"reference_impls/__init__.py", *MEASURING, *(method_spec(m).file for m in methods)}
    files = {f for f in _closure(root, start) if not f.startswith(_REGISTRY + "/")}
    files.add(f"{_REGISTRY}/specs.py")
    if paper is not None:
        files.add(_family_file(paper))
    return sorted(files)


def paper_family(paper: str) -> str:
    """The registry family a runnable paper is declared in: sparsity, depth, width, kvcache or standins."""
    for family in _FAMILIES:
        if any(p.paper == paper for p in family.PAPERS):
            return family.__name__.rsplit(".", 1)[1]
    raise KBError(f"paper {paper!r} is in no registry family")


def _family_file(paper: str) -> str:
    return f"{_REGISTRY}/{paper_family(paper)}.py"


def paper_code(paper: str, root: Path | None = None) -> CodeVersion:
    """The content hash of what `kb reproduce <paper>` runs, read under `root` (default: this checkout)."""
    base = root or code_root()
    return code_version(base, code_files(base, paper_methods(paper), paper))


def sweep_code(methods: Iterable[str], root: Path | None = None) -> CodeVersion:
    base = root or code_root()
    return code_version(base, code_files(base, methods))
