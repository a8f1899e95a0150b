"""The units a claim's interval resamples, as the harness measures them: perplexity windows, probe items, KV-cache
windows, paired timed repeats, training stand-ins' held-out windows; and the verdict history a commit keeps."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kb.results import Reproduction
from reference_impls.harness.cacheeval import CacheSettings, evaluate_cache
from reference_impls.harness.evaluate import perplexity, window_nll
from reference_impls.harness.metrics import speed_record
from reference_impls.harness.probe import TokenTask, score_task
from reference_impls.harness.report import keep_history
from reference_impls.harness.scratch import eval_losses
from reference_impls.harness.speed import measure_speed


def _windows(n: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def test_window_nll_are_the_per_window_losses_and_give_the_perplexity(random_model) -> None:
    windows = _windows(5, 24)
    nll = window_nll(random_model, windows, batch_size=2)
    assert len(nll) == 5
    with torch.inference_mode():
        for i in (0, 3):
            ids = windows[i : i + 1]
            logits = random_model(input_ids=ids).logits
            expected = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
            assert nll[i] == pytest.approx(float(expected), rel=1e-5)
    assert perplexity(random_model, windows) == pytest.approx(math.exp(sum(nll) / 5), rel=1e-9)


def test_probe_hits_are_item_by_item_and_average_to_acc_norm(random_model) -> None:
    g = torch.Generator().manual_seed(1)
    items, k, length = 40, 4, 3
    task = TokenTask("t", torch.randint(0, 256, (items, 6), generator=g),
                     torch.randint(0, 256, (items, k, length), generator=g),
                     torch.randint(0, k, (items,), generator=g), torch.full((items, k), 3.0))  # fmt: skip
    score = score_task(random_model, task, batch_size=16)
    assert len(score.hits_norm) == items and set(score.hits_norm) <= {0, 1}
    assert sum(score.hits_norm) / items == pytest.approx(score.acc_norm)


def test_kv_cache_evaluation_keeps_each_windows_continuation_nll(random_model) -> None:
    windows = _windows(4, 40, seed=2)
    settings = CacheSettings(continuation_tokens=8, generate_tokens=2, repeats=1, batch_size=2)
    ev = evaluate_cache(random_model, windows, settings, policy=None)
    assert len(ev.window_nll) == 4
    assert ev.nll == pytest.approx(sum(ev.window_nll) / 4) and ev.ppl == pytest.approx(math.exp(ev.nll))
    with torch.inference_mode():  # the full cache: the last 8 tokens of window 1 scored after its first 32
        logits = random_model(input_ids=windows[1:2]).logits[0, 31:-1].float()
        expected = F.cross_entropy(logits, windows[1, 32:])
    assert ev.window_nll[1] == pytest.approx(float(expected), rel=1e-4)


def test_speed_timed_against_dense_keeps_one_ratio_per_repeat(random_model) -> None:
    prompt = _windows(1, 12, seed=3)
    sample = measure_speed(random_model, prompt, decode_tokens=3, repeats=4, against=random_model)
    assert len(sample.prefill_ratios) == len(sample.decode_ratios) == 4
    assert all(r > 0 and math.isfinite(r) for r in (*sample.prefill_ratios, *sample.decode_ratios))
    record = speed_record(sample, None)  # no dense sample needed: the pairs carry the ratios
    geo = math.exp(sum(math.log(r) for r in sample.decode_ratios) / 4)
    assert record.decode_speedup == pytest.approx(geo) and record.decode_ratios == list(sample.decode_ratios)
    alone = measure_speed(random_model, prompt, decode_tokens=3, repeats=2)
    assert alone.decode_ratios == () and speed_record(alone, None).decode_speedup is None


def test_training_stand_ins_report_held_out_loss_window_by_window(random_model) -> None:
    stream = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(4))
    losses = eval_losses(random_model, stream, seqlen=15, windows=5)
    assert len(losses) == 5
    with torch.inference_mode():
        ids = stream[32:48].unsqueeze(0)  # the third window of 16 tokens
        logits = random_model(ids[:, :-1]).logits[0].float()
        assert losses[2] == pytest.approx(float(F.cross_entropy(logits, ids[0, 1:])), rel=1e-5)


def _record(verdict: str) -> Reproduction:
    return Reproduction.model_validate({
        "paper": "wanda", "model": "m",
        "dataset": {"corpus": "c", "calibration": {"samples": 1, "seqlen": 8, "tokens": 8, "stream_tokens": 9},
                    "evaluation": {"windows": 1, "seqlen": 8, "tokens": 8, "stream_tokens": 9}},
        "runs": [{"label": "dense", "kind": "dense", "metrics": {"ppl": 2.0, "size": {
            "params_total": 1, "params_non_embedding": 1, "params_decoder": 1, "weight_bytes": 4,
            "decoder_sparsity": 0.0, "layers": 1}}}],
        "claim": {"statement": "s", "verdict": verdict, "reason": f"now {verdict}"},
    })  # fmt: skip


def test_a_commit_keeps_the_verdicts_it_replaces(tmp_path) -> None:
    path = tmp_path / "wanda.json"
    assert keep_history(_record("holds"), path).claim.history == []  # nothing committed before
    path.write_text(json.dumps({"claim": {"statement": "s", "holds": False, "reason": "old numbers"},
                                "produced": "2026-12-03", "code": {"hash": "sha256:" + "a" * 64}}))  # fmt: skip
    first = keep_history(_record("inconclusive"), path)  # over a schema-2 result (`holds: false`)
    [past] = first.claim.history
    assert (past.verdict, past.reason, str(past.produced)) == ("does not hold", "old numbers", "2026-12-03")
    assert past.code_hash == "sha256:" + "a" * 64
    path.write_text(first.model_dump_json())
    second = keep_history(_record("holds"), path)
    assert [h.verdict for h in second.claim.history] == ["does not hold", "inconclusive"]
    path.write_text("{not json")
    assert keep_history(_record("holds"), path).claim.history == []
