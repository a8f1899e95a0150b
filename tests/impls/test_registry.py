"""The registry: torch-free, consistent with `papers/`, and every entry importable with the declared shape."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kb.errors import KBError
from reference_impls import registry

REPO = Path(__file__).resolve().parents[2]


def test_registry_and_option_types_import_without_torch():
    code = (
        "import sys, reference_impls.registry as r, reference_impls.harness.options, kb.results; "
        "r.runnable_papers(); r.paper_ids(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_paper_ids_come_from_the_records():
    assert registry.paper_ids(REPO) == sorted(p.stem for p in (REPO / "papers").glob("*.yaml"))
    assert set(registry.PAPERS) <= set(registry.paper_ids(REPO))


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_every_method_module_has_the_contract_shape(name):
    spec = registry.METHODS[name]
    assert (REPO / spec.file).is_file()
    module = importlib.import_module(spec.module)
    assert set(inspect.signature(module.prune).parameters) == {"model", "calib", "config", "ctx"}
    fields = module.Config.model_fields
    for target in spec.targets:
        assert target in fields, f"{name} accepts --{target} but its Config has no such field"
    module.Config()  # every option has a default
    if spec.paper is not None:
        assert spec.paper in registry.paper_ids(REPO)


@pytest.mark.parametrize("paper", sorted(registry.PAPERS))
def test_every_paper_spec_is_consistent(paper):
    spec = registry.PAPERS[paper]
    labels = [r.label for r in spec.runs]
    assert len(labels) == len(set(labels)) and "dense" not in labels
    assert all(r.method in registry.METHODS for r in spec.runs)
    assert spec.method in {r.method for r in spec.runs}
    assert registry.METHODS[spec.method].paper == paper
    assert set(spec.defaults) <= {
        *registry.TARGETS,
        "nsamples",
        "seqlen",
        "eval_tokens",
        "probe_items",
        "speed_repeats",
    }
    statement = spec.statement(spec.defaults)
    assert "{" not in statement and "None" not in statement
    for run in spec.runs:  # fixed run options are real config fields
        fields = importlib.import_module(registry.METHODS[run.method].module).Config.model_fields
        assert set(run.options) <= set(fields), run.label


def test_unknown_and_unimplemented_papers_are_one_line_errors(monkeypatch):
    monkeypatch.delitem(registry.PAPERS, "besa")  # a record whose code is not written yet
    with pytest.raises(KBError, match="no runnable implementation yet"):
        registry.paper_spec("besa")
    with pytest.raises(KBError, match="unknown paper 'nope'"):
        registry.paper_spec("nope")
    with pytest.raises(KBError, match="unknown method"):
        registry.method_spec("nope")


def test_help_text_comes_from_the_registry(capsys):
    from kb_cli.main import main

    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    out = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse may wrap after a hyphen
    assert all(p in out for p in registry.PAPERS)
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))
    assert all(f"{m.name} ({m.kind}" in out for m in registry.METHODS.values())
