"""The README's "Add a paper of any kind", done to the letter with a toy paper in a copy of the checkout.

The steps name the files a contributor writes: the method module, the claim module and one line in `CLAIMS`
(plus the record's `implementation:`). In a copy of the checkout holding exactly those additions, the toy
method passes the contract test, `kb validate` is clean, and `kb build --check` names the toy paper as the one
result missing and no other result as stale. The section is also read for what it promises: every file of the
code it names exists, and every function it attributes to a module is there.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAPER = "toy-paper"
MODULE = PAPER.replace("-", "_")


def _section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Add a paper of any kind")
    return readme[start : readme.index("\n## ", start + 3)]


def test_the_section_names_the_layout_the_toy_paper_follows():
    text = _section()
    for needle in ("`reference_impls/<id>.py`", "`reference_impls/claims/<id>.py`", "`CLAIMS`",
                   "`reference_impls/registry/__init__.py`", "`implementation: reference_impls/<id>.py`",
                   "`tests/impls/test_add_a_paper.py`", "`kb fingerprint`"):  # fmt: skip
        assert needle in text, f"README's 'Add a paper of any kind' lacks {needle}"
    # the family files of the old layout are gone, and the section must not send anyone to them
    for gone in ("registry/sparsity.py", "registry/depth.py", "registry/width.py", "registry/standins.py"):
        assert gone not in text
        assert not (REPO / "reference_impls" / gone).exists()


def test_every_file_and_function_the_section_names_exists():
    text = _section()
    files = set(re.findall(r"`((?:harness|primitives|claims|registry)/\w+\.py)`", text))
    assert len(files) >= 15  # the section really points into the code
    for rel in files:
        assert (REPO / "reference_impls" / rel).is_file(), rel
    for rel in re.findall(r"`((?:reference_impls|tests|kb)/[\w/]+\.py)`", text):
        assert (REPO / rel).is_file(), rel
    # "`primitives/depth.py` (`layers_to_remove`, `modules_to_drop`)" and "`primitives/norms.py`: `a`, `b`"
    named = re.findall(r"`((?:harness|primitives)/\w+\.py)`(?: \(|: )((?:`\w+`(?:, )?)+)", text)
    assert len(named) >= 3
    for rel, names in named:
        module = importlib.import_module("reference_impls." + rel.removesuffix(".py").replace("/", "."))
        for name in re.findall(r"`(\w+)`", names):
            assert hasattr(module, name), f"README says {rel} has {name}"
    # the calls the contract spells out
    from reference_impls.harness import eviction

    assert callable(eviction.policy_outcome) and eviction.CachePolicy
    for kit in ("vs", "below", "above", "verdict", "check"):
        assert kit in text and hasattr(importlib.import_module("reference_impls.claims._kit"), kit)


_METHOD = '''\
"""Toy paper: prune the weights with the smallest |W| times the norm of their input column (for a test only).

Paper:    none; written by tests/impls/test_add_a_paper.py as the README describes.
"""

from __future__ import annotations

import torch
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, prunable_linears, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import row_mask


class Config(SparsityConfig):
    pass


def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Per output row, zero the lowest |W| x column norm scores."""
    with torch.inference_mode():
        for layer in decoder_layers(model):
            for linear in prunable_linears(layer).values():
                weight = linear.weight.float()
                score = weight.abs() * weight.norm(dim=0, keepdim=True)
                set_weight(linear, weight.masked_fill(row_mask(score, config.sparsity), 0.0))
    return Outcome(kind="weight-sparsity")
'''

_CLAIM = '''\
"""Toy paper: its score against plain magnitude pruning, at the same sparsity."""

from __future__ import annotations

from ..registry.specs import MethodSpec, PaperSpec, Results, Run, Verdict
from ._kit import below, verdict, vs

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("toy-paper", "reference_impls.toy_paper", "weight-sparsity",
               "|W| x column norm, per row", False, ("sparsity",), paper="toy-paper"),
)  # fmt: skip


def _claim(r: Results) -> Verdict:
    return verdict(vs("toy ppl", r.ppl("toy"), below("magnitude", r.ppl("magnitude"))))


PAPER = PaperSpec(
    paper="toy-paper",
    method="toy-paper",
    runs=(Run("magnitude", "magnitude"), Run("toy", "toy-paper")),
    claim="At {sparsity} sparsity the toy score gives lower perplexity than magnitude pruning",
    check=_claim,
    defaults={"sparsity": 0.5},
    metrics=("ppl",),
)
'''


def _checkout(dest: Path) -> None:
    """The files git would put in a clone (tracked, plus new files not ignored), copied to `dest`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


_RECORD = f"""\
# yaml-language-server: $schema=../schema/paper.schema.json
id: {PAPER}
title: A Toy Score for Pruning Weights by Magnitude and Input Column Norm
authors:
  - Test Author
origin:
  kind: academia
  affiliations:
    - "Example University"
year: 2026
venue:
  name: arXiv
  year: 2026
  kind: preprint
scope: weight-pruning
identifiers:
  arxiv: "2612.00001"
links:
  paper: https://arxiv.org/abs/2612.00001
tags:
  type:
    - unstructured
  criteria:
    - magnitude
  budget:
    - sparsity
  data:
    - data-free
  retrain:
    - without
  weight:
    - frozen
form: [unstructured-sparse]
takeaway: >-
  A toy record written by the test suite: weights are ranked by their magnitude times the norm of
  their input column and the lowest of each row are removed.
findings:
  - claim: "The toy score is a stand-in used only to test how a paper is added."
    source:
      url: https://arxiv.org/abs/2612.00001
      locator: "abstract"
unverified:
  venue: a toy record made by a test
  identifiers: a toy record made by a test
  origin: a toy record made by a test
implementation: reference_impls/{MODULE}.py
"""


def _record(dest: Path) -> None:
    """The toy paper's record (the "Contribute a paper" steps write one; this test is about the code) and its
    challenge note."""
    (dest / "papers" / f"{PAPER}.yaml").write_text(_RECORD, encoding="utf-8")
    note = (
        "# Toy paper\n\nA toy paper written by a test; its open question is whether the score helps at all.\n"
    )
    (dest / "challenge" / f"{PAPER}.md").write_text(note, encoding="utf-8")


@pytest.fixture(scope="module")
def toy_checkout(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("checkout")
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    _checkout(dest)
    code = dest / "reference_impls"
    # step 1: the method; step 2: the claim; step 3: one line in CLAIMS (and the record's implementation)
    (code / f"{MODULE}.py").write_text(_METHOD, encoding="utf-8")
    (code / "claims" / f"{MODULE}.py").write_text(_CLAIM, encoding="utf-8")
    listing = code / "registry" / "__init__.py"
    head = "CLAIMS: tuple[str, ...] = (\n"
    assert head in listing.read_text(encoding="utf-8")
    listing.write_text(
        listing.read_text(encoding="utf-8").replace(head, f'{head}    "{MODULE}",\n'), encoding="utf-8"
    )
    _record(dest)
    return dest


def _kb(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "KB_ROOT": str(checkout)}
    code = "import sys; from kb_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_the_toy_paper_passes_the_contract_test(toy_checkout):
    env = {**os.environ, "PYTHONPATH": str(toy_checkout)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", PAPER,
                          "tests/impls/test_contract.py::test_every_method_keeps_the_contract_and_is_deterministic"],
                         cwd=toy_checkout, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout  # the toy method itself ran, not zero selected tests


def test_kb_validate_accepts_the_toy_record(toy_checkout):
    run = _kb(toy_checkout, "validate")
    assert run.returncode == 0, run.stdout + run.stderr


def test_build_check_names_only_the_toy_paper_as_missing(toy_checkout):
    run = _kb(toy_checkout, "build", "--check")
    assert run.returncode == 1
    results = [line for line in run.stderr.splitlines() if line.startswith("reproductions/")]
    missing = (
        f"reproductions/{PAPER}.json: missing: {PAPER} is runnable but has no committed result; "
        f"run `kb reproduce {PAPER} --model tiny-llama --commit`"
    )
    assert results == [missing]
