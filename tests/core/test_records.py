"""The real catalogue: the 29 seed papers and the 21 added after them, valid, each with six axes and a challenge note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb.checks import check_all
from kb.jsonschema import SCHEMA_PATH, render_schema
from kb.store import MODELINE, load_kb
from kb.vocab import AXES
from kb_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SEED_IDS = {
    "sparsegpt",
    "wanda",
    "essential-sparsity",
    "owl",
    "ria",
    "dsnot",
    "besa",
    "llm-surgeon",
    "sparse-scaling-laws",
    "flash-llm",
    "bitnet-b158",
    "llm-pruner",
    "loraprune",
    "sheared-llama",
    "compresso",
    "k-prune",
    "minitron",
    "minitron-approach",
    "coupled-components",
    "deeper-layers",
    "shortened-llama",
    "shortgpt",
    "llm-streamline",
    "what-matters",
    "reassessing-layer-pruning",
    "deeper-look-depth",
    "heterogeneous-sublayers",
    "h2o",
    "keyformer",
}

# The seed list's newer rows and widely used methods added after the seed (issue 30), to 50 records.
ADDED_IDS = {
    "puzzle", "2ssp", "prunenet", "pudding", "dlp", "slimllm", "oats", "llamaflex", "losparse", "laco",
    "slicegpt", "flap", "sleb", "blockpruner", "alps", "alphapruning", "pruner-zero", "ziplm",
    "streamingllm", "snapkv", "pyramidkv",
}  # fmt: skip


@pytest.fixture(scope="module")
def kb():
    return load_kb(ROOT)


def test_the_catalogue_validates_clean(kb):
    from reference_impls.registry import runnable_papers  # torch-free

    assert [str(p) for p in check_all(kb, runnable_papers())] == []


def test_the_seed_papers_and_the_added_ones_are_present(kb):
    ids = {r.paper.id for r in kb.records}
    assert ids >= SEED_IDS | ADDED_IDS
    assert len(ids) >= 50 and not SEED_IDS & ADDED_IDS


def test_every_paper_has_six_axes_and_a_challenge_note(kb):
    for rec in kb.records:
        for axis in AXES:
            assert getattr(rec.paper.tags, axis), (rec.paper.id, axis)
        assert len(kb.challenges.get(rec.paper.id, "").strip()) >= 80, rec.paper.id


def test_seed_errors_are_fixed(kb):
    shortgpt, deeper = kb.get("shortgpt").paper, kb.get("deeper-layers").paper
    # ShortGPT's seed tags were copied from the Unreasonable-Ineffectiveness row
    assert [e.value for e in shortgpt.tags.retrain] == ["without"]
    assert [e.value for e in shortgpt.tags.weight] == ["frozen"]
    # community repositories are not shown as official
    assert all(not c.official for c in deeper.links.code if "arcee-ai/PruneMe" in c.url)
    # LoRAPrune no longer carries Compresso's code link
    assert all("Moonlit" not in c.url for c in kb.get("loraprune").paper.links.code)
    # packed seed values became several values
    assert {e.value for e in kb.get("wanda").paper.tags.type} == {"unstructured", "semi-structured"}


def test_records_and_template_carry_the_modeline(kb):
    for path in sorted((ROOT / "papers").glob("*.yaml")):
        assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE, path.name
    template = (ROOT / "kb" / "templates" / "paper.yaml").read_text(encoding="utf-8")
    assert template.splitlines()[0] == MODELINE


def test_committed_json_schema_is_fresh(kb):
    assert (ROOT / SCHEMA_PATH).read_text(encoding="utf-8") == render_schema(kb.vocab), "run `kb schema`"


def test_list_json_shows_every_record(capsys, monkeypatch):
    monkeypatch.setenv("KB_ROOT", str(ROOT))
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == len(list((ROOT / "papers").glob("*.yaml")))
    assert all("id" in d and "tags" in d for d in data)
