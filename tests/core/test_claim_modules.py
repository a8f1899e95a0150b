"""One claim module per runnable paper: the layout is what `CLAIMS` lists, and a result's code hash covers its
own claim and the declarations of the methods it runs, never a neighbour's claim nor the list. Torch-free."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from reference_impls import registry

REPO = Path(__file__).resolve().parents[2]
CLAIMS = REPO / "reference_impls" / "claims"
SHARED = {"_kit", "baselines"}


def test_one_module_per_paper_named_by_its_record_id():
    on_disk = {p.stem for p in CLAIMS.glob("*.py")} - {"__init__", "_kit"}
    assert sorted(registry.CLAIMS) == sorted(on_disk)  # each listed once, none left out
    papers = {name for name in registry.CLAIMS if name not in SHARED}
    assert papers == {p.replace("-", "_") for p in registry.PAPERS}
    for paper in registry.PAPERS:
        assert registry.claim_file(paper) == f"reference_impls/claims/{paper.replace('-', '_')}.py"


def test_every_method_is_declared_by_its_paper_or_with_the_shared_baselines():
    for name in registry.CLAIMS:
        module = importlib.import_module(f"reference_impls.claims.{name}")
        owner = module.PAPER.paper if hasattr(module, "PAPER") else None  # only baselines.py has no paper
        assert (owner is None) == (name == "baselines"), name
        assert module.METHODS and all(m.paper == owner for m in module.METHODS), name


def _claims_in(files: list[str]) -> set[str]:
    return {f for f in files if f.startswith("reference_impls/claims/")}


def test_a_result_covers_its_claim_and_the_declarations_of_its_methods_only():
    declared = {m.name: f"reference_impls/claims/{n}.py" for n in registry.CLAIMS
                for m in importlib.import_module(f"reference_impls.claims.{n}").METHODS}  # fmt: skip
    for paper in registry.PAPERS:
        methods = registry.paper_methods(paper)
        files = registry.code_files(REPO, methods, paper)
        expected = {registry.claim_file(paper), registry.CLAIM_KIT, *(declared[m] for m in methods)}
        # a claim may also read shared constants from another claim module (PyramidKV: KV_DATA of baselines.py)
        expected |= {f for f in registry._imported_files(REPO, registry.claim_file(paper))
                     if f.startswith("reference_impls/claims/")}  # fmt: skip
        assert _claims_in(files) == expected, paper
        assert registry.SPECS in files
        shapes = {
            registry.SPECS,
            "reference_impls/registry/measured.py",
        }  # specs and the numbers it hands out
        assert {f for f in files if f.startswith("reference_impls/registry/")} == shapes, paper
    sweep = registry.code_files(REPO, ["magnitude", "wanda"])
    assert _claims_in(sweep) == {declared["magnitude"], declared["wanda"], registry.CLAIM_KIT}
    assert registry.SPECS in sweep


_TOY_CLAIM = '''
"""A toy paper, added only by this test."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("toy-method", "reference_impls.toy_paper", "weight-sparsity", "a toy", False, ("sparsity",),
               paper="toy-paper"),
)


def _claim(r: Results) -> Verdict:
    return verdict(vs("toy", r.ppl("toy"), below("magnitude", r.ppl("magnitude"))))


PAPER = PaperSpec(paper="toy-paper", method="toy-method", claim="toy below magnitude", check=_claim,
                  runs=(Run("magnitude", "magnitude"), Run("toy", "toy-method")))
'''

_HASHES = """
import json, sys
from pathlib import Path
from reference_impls import registry
assert "toy-paper" in registry.PAPERS and registry.code_root() == Path.cwd()
out = {p: registry.paper_code(p).hash for p in registry.PAPERS}
out.update({"sweep " + " ".join(ms): registry.sweep_code(ms).hash for ms in json.loads(sys.argv[1])})
out["toy files"] = registry.code_files(registry.code_root(), registry.paper_methods("toy-paper"), "toy-paper")
print(json.dumps(out))
"""


def test_adding_a_paper_stales_no_other_result(tmp_path):
    """A new paper is a new claim module (with its method module) and one line in `CLAIMS`: in a copy of the
    code with such a paper registered, every existing result keeps its code hash."""
    shutil.copytree(REPO / "reference_impls", tmp_path / "reference_impls",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    code = tmp_path / "reference_impls"
    sweeps = [["magnitude", "wanda"], ["window", "h2o", "keyformer"], ["shortgpt"]]
    before = {p: registry.paper_code(p, tmp_path).hash for p in registry.PAPERS}
    before.update({"sweep " + " ".join(ms): registry.sweep_code(ms, tmp_path).hash for ms in sweeps})
    (code / "claims" / "toy_paper.py").write_text(textwrap.dedent(_TOY_CLAIM).lstrip())
    (code / "toy_paper.py").write_text('"""A toy method."""\n\nfrom .magnitude import prune  # noqa: F401\n')
    listing = code / "registry" / "__init__.py"
    head = "CLAIMS: tuple[str, ...] = (\n"
    assert head in listing.read_text()
    listing.write_text(listing.read_text().replace(head, head + '    "toy_paper",\n'))
    run = subprocess.run([sys.executable, "-c", _HASHES, json.dumps(sweeps)], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert run.returncode == 0, run.stderr
    there = json.loads(run.stdout)
    assert {key: there[key] for key in before} == before  # every paper and sweep result keeps its hash
    toy = there["toy files"]
    assert {"reference_impls/claims/toy_paper.py", "reference_impls/toy_paper.py"} <= set(toy)
    assert _claims_in(toy) == {"reference_impls/claims/toy_paper.py", "reference_impls/claims/baselines.py",
                               registry.CLAIM_KIT}  # fmt: skip


# Pre-registered near their bound, but a further draw would repeat the first exactly: no arm reads calibration data
# or a seed (global magnitude pruning; KV-cache policies), so they run one draw and say so in their spec.
NOTHING_DRAWN = ("essential-sparsity", "h2o")


def test_calibration_draws_follow_the_preregistered_list():
    """`data/verdict-preregistration.yaml` (committed before any verdict code changed) lists the claims whose margin
    was within 10% of their bound: those run 3 calibration draws, every other claim one."""
    prereg = yaml.safe_load((REPO / "data" / "verdict-preregistration.yaml").read_text("utf-8"))
    assert prereg["threshold"] == 0.10 and prereg["draws_when_within"] == 3
    # every paper runnable when the list was made is in it; a paper added later runs one draw (its claim is new)
    assert set(prereg["claims"]) <= set(registry.PAPERS)
    for paper in set(registry.PAPERS) - set(prereg["claims"]):
        assert registry.PAPERS[paper].draws == 1, paper
    for paper, entry in prereg["claims"].items():
        spec = registry.PAPERS[paper]
        if entry["within"] and paper not in NOTHING_DRAWN:
            assert spec.draws == 3, paper
        else:
            assert spec.draws == 1, paper
    for paper in NOTHING_DRAWN:
        assert prereg["claims"][paper]["within"]
        assert not any(registry.METHODS[r.method].needs_calibration for r in registry.PAPERS[paper].runs), (
            paper
        )
