"""Behavioural fingerprints: a moved code hash with unchanged behaviour keeps a result fresh; a change that alters
numbers (or a default that would) moves the fingerprint and names the result; the committed book is true."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kb.results import Fingerprint, Metrics, Reproduction, Size, Speed
from reference_impls import registry
from reference_impls.harness import fingerprint as fpr
from reference_impls.registry.freshness import FINGERPRINTS, judge_results, load_fingerprints

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small() -> str:
    with fpr.small_model() as path:
        yield path


def _committed(paper: str) -> Reproduction:
    return Reproduction.model_validate_json(
        (ROOT / "reproductions" / f"{paper}.json").read_text(encoding="utf-8")
    )


def test_the_same_code_gives_the_same_fingerprint(small):
    a = fpr.paper_payload("wanda", {"model": "tiny-llama"}, small)
    b = fpr.paper_payload("wanda", {"model": "tiny-llama"}, small)
    assert fpr.digest(a) == fpr.digest(b)
    assert [r["label"] for r in a["runs"]] == ["dense", "magnitude", "wanda"]
    assert (
        a["options"]["model"] == "tiny-llama" and a["options"]["eval_tokens"] == 4096
    )  # the real run's options


def test_timings_and_resident_memory_are_not_behaviour():
    speed = Speed(prompt_tokens=8, decode_tokens=4, repeats=1, threads=1, prefill_ms=3.7, decode_tokens_per_s=91.0,
                  kv_cache_bytes=512, prefill_speedup=1.3, decode_speedup=None)  # fmt: skip
    size = Size(params_total=1, params_non_embedding=1, params_decoder=1, weight_bytes=4, decoder_sparsity=0.0,
                layers=1)  # fmt: skip
    steady = fpr._steady_metrics(Metrics(ppl=12.5, size=size, speed=speed))
    assert steady.ppl == 12.5 and steady.speed is not None
    assert (steady.speed.prefill_ms, steady.speed.decode_tokens_per_s) == (1.0, 1.0)
    assert steady.speed.prefill_speedup == 1.0 and steady.speed.decode_speedup is None
    assert steady.speed.kv_cache_bytes == 512  # a size, not a clock


def test_a_changed_default_moves_the_fingerprint_even_when_the_tiny_run_cannot_see_it(small, monkeypatch):
    spec = registry.PAPERS["llm-streamline"]
    before = fpr.paper_payload("llm-streamline", {"model": "tiny-llama"}, small)
    changed = dataclasses.replace(
        spec, defaults={**spec.defaults, "probe_items": spec.defaults["probe_items"] + 1}
    )
    monkeypatch.setitem(registry.PAPERS, "llm-streamline", changed)
    after = fpr.paper_payload("llm-streamline", {"model": "tiny-llama"}, small)
    assert fpr.digest(before) != fpr.digest(after)
    n = spec.defaults["probe_items"]
    assert fpr.differences(before, after) == [f".options.probe_items: {n} -> {n + 1}"]


def test_a_change_in_what_a_method_computes_moves_the_fingerprint(small, monkeypatch):
    import reference_impls.wanda as wanda

    before = fpr.paper_payload("wanda", {"model": "tiny-llama"}, small)
    original = wanda.prune

    def nudged(model, calib, config, ctx):
        outcome = original(model, calib, config, ctx)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # same zeros, other numbers
        return outcome

    monkeypatch.setattr(wanda, "prune", nudged)
    after = fpr.paper_payload("wanda", {"model": "tiny-llama"}, small)
    diff = fpr.differences(before, after)
    assert diff and all(d.startswith((".runs[2].", ".claim.reason")) for d in diff), diff
    assert any(d.startswith(".runs[2].metrics.ppl") for d in diff)


def test_small_float_differences_from_another_cpu_are_tolerated_and_large_ones_named():
    a = {"runs": [{"ppl": 41.2345, "layers": [1, 2]}]}
    assert fpr.differences(a, {"runs": [{"ppl": 41.2346, "layers": [1, 2]}]}) == []
    assert fpr.differences(a, {"runs": [{"ppl": 41.3, "layers": [1, 2]}]}) == [
        ".runs[0].ppl: 41.2345 -> 41.3"
    ]
    assert fpr.differences(a, {"runs": [{"ppl": 41.2345, "layers": [1, 3]}]}) == [
        ".runs[0].layers[1]: 2 -> 3"
    ]


def _copy_code(dest: Path) -> None:
    shutil.copytree(ROOT / "reference_impls", dest / "reference_impls",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip


def _digest_in(root: Path, paper: str) -> str:
    """The fingerprint computed by the code under `root`, in a fresh process."""
    code = (
        "import sys\n"
        "from reference_impls.harness import fingerprint as f\n"
        "with f.small_model() as m:\n"
        f"    print(f.digest(f.paper_payload({paper!r}, {{'model': 'tiny-llama'}}, m)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _judge(root: Path, rep: Reproduction, today: str) -> tuple[list[str], list[str]]:
    book = root / FINGERPRINTS
    book.parent.mkdir(parents=True, exist_ok=True)
    entry = {"digest": today, "code_hash": registry.paper_code(rep.paper, root).hash, "version": fpr.VERSION,
             "payload": {}}  # fmt: skip
    book.write_text(json.dumps({"results": {f"reproductions/{rep.paper}.json": entry}}), encoding="utf-8")
    assert set(load_fingerprints(root)) == {f"reproductions/{rep.paper}.json"}
    fresh = judge_results(root, {rep.paper: rep}, {})
    return fresh.stale, fresh.by_behaviour


def test_a_comment_edit_keeps_a_result_fresh_and_a_default_change_names_it(tmp_path):
    rep = _committed("wanda")
    here = _digest_in(ROOT, "wanda")
    rep = rep.model_copy(update={"code": registry.paper_code("wanda", ROOT),
                                 "fingerprint": Fingerprint(digest=here, code_hash="sha256:" + "0" * 64, version=fpr.VERSION)})  # fmt: skip
    _copy_code(tmp_path)
    metrics = tmp_path / "reference_impls" / "harness" / "metrics.py"
    metrics.write_text(metrics.read_text(encoding="utf-8") + "\n# a comment changes the hash, not the numbers\n",
                       encoding="utf-8")  # fmt: skip
    assert registry.paper_code("wanda", tmp_path).hash != rep.code.hash
    assert _digest_in(tmp_path, "wanda") == here
    stale, kept = _judge(tmp_path, rep, here)
    assert (stale, kept) == ([], ["reproductions/wanda.json"])

    runner = tmp_path / "reference_impls" / "harness" / "runner.py"
    text = runner.read_text(encoding="utf-8")
    assert "    eval_tokens: int = 4096\n" in text
    runner.write_text(
        text.replace("    eval_tokens: int = 4096\n", "    eval_tokens: int = 2048\n"), encoding="utf-8"
    )
    moved = _digest_in(tmp_path, "wanda")
    assert moved != here
    stale, kept = _judge(tmp_path, rep, moved)
    assert kept == [] and len(stale) == 1
    assert stale[0].startswith("reproductions/wanda.json: stale: the code it ran changed since")
    assert "its behaviour changed too (the fingerprint moved)" in stale[0]
    assert stale[0].endswith("run `kb reproduce wanda --model tiny-llama --commit`")


def test_a_result_whose_code_moved_without_a_fingerprint_says_how_to_find_out(tmp_path):
    rep = _committed("wanda").model_copy(
        update={"code": registry.paper_code("wanda", ROOT), "fingerprint": None}
    )
    _copy_code(tmp_path)
    (tmp_path / "reference_impls" / "harness" / "metrics.py").write_text("# emptied\n", encoding="utf-8")
    fresh = judge_results(tmp_path, {"wanda": rep}, {})
    assert fresh.by_behaviour == [] and len(fresh.stale) == 1
    assert "not fingerprinted at today's code" in fresh.stale[0]


def test_the_committed_book_is_true_for_every_result_it_keeps_fresh(capsys):
    """CI's guard: every result kept fresh by its fingerprint is recomputed here with today's code."""
    from kb_cli.main import main

    rc = main(["fingerprint", "--check"])
    err = capsys.readouterr()
    assert rc == 0, err.out + err.err


def test_worker_processes_give_the_same_fingerprints_as_one_process():
    records = {p: _committed(p) for p in ("wanda", "sparsegpt", "ria")}
    alone = {k: fp.digest for k, fp, _payload, _s in fpr.measure_many(records, jobs=1)}
    # the slowest first by the recorded cost; every result once, whatever order they finish in
    shared = {
        k: fp.digest for k, fp, _payload, _s in fpr.measure_many(records, jobs=2, cost={"sparsegpt": 9.0})
    }
    assert shared == alone and sorted(alone) == sorted(records)


def test_fingerprint_refuses_a_worker_count_below_one(capsys):
    from kb_cli.main import main

    assert main(["fingerprint", "wanda", "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kb: error: --jobs must be at least 1, not 0"]
