"""Flash-LLM stand-in: the Tiled-CSL format, the load-sparse compute-dense product, the byte model, the run."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from kb.errors import KBError
from reference_impls import flash_llm as fl
from reference_impls import registry, wanda
from reference_impls.harness import runner
from reference_impls.harness.contract import Context


def _sparse(m: int, k: int, sparsity: float, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(m, k, generator=gen)
    w[torch.rand(m, k, generator=gen) < sparsity] = 0
    return w.to(dtype)


def test_swizzle_is_a_bijection_on_a_tile():
    rows = torch.arange(128).repeat_interleave(64)
    cols = torch.arange(64).repeat(128)
    pos = fl.swizzle(rows, cols)
    assert sorted(pos.tolist()) == list(range(128 * 64))
    back_r, back_c = fl.unswizzle(pos)
    assert torch.equal(back_r, rows) and torch.equal(back_c, cols)
    assert not torch.equal(pos, rows * 64 + cols)  # the XOR really moves entries (rows 1..7 of each 8)


@pytest.mark.parametrize(("shape", "dtype"), [((256, 128), torch.float16), ((300, 200), torch.float32),
                                              ((192, 576), torch.float32)])  # fmt: skip
def test_round_trip_is_bitwise_exact_with_padded_shapes(shape, dtype):
    w = _sparse(*shape, 0.8, dtype=dtype)
    enc = fl.encode(w)
    assert enc.grid == (math.ceil(shape[0] / 128), math.ceil(shape[1] / 64))
    assert torch.equal(fl.decode(enc), w) and fl.decode(enc).dtype == dtype


def test_tiles_are_padded_to_four_items_with_zeros_at_unused_positions():
    w = _sparse(256, 128, 0.7, seed=3)
    enc = fl.encode(w)
    counts = (enc.offsets[1:] - enc.offsets[:-1]).tolist()
    assert all(c % 4 == 0 for c in counts) and enc.offsets[-1] == enc.items
    for t in range(enc.tiles):
        lo, hi = int(enc.offsets[t]), int(enc.offsets[t + 1])
        pos = enc.positions[lo:hi].long()
        assert pos.unique().numel() == pos.numel()  # unique positions: decoding is a plain scatter
        assert pos.min() >= 0 and pos.max() < 128 * 64
    assert enc.items - int((w != 0).sum()) == int((enc.values == 0).sum())  # padding items are the zeros
    assert enc.items - int((w != 0).sum()) == sum((-c) % 4 for c in _tile_nonzeros(w))


def _tile_nonzeros(w: torch.Tensor) -> list[int]:
    return [int((w[i : i + 128, j : j + 64] != 0).sum()) for i in range(0, w.shape[0], 128)
            for j in range(0, w.shape[1], 64)]  # fmt: skip


def test_a_full_tile_needs_no_padding_and_an_empty_one_no_items():
    w = torch.zeros(128, 128)
    w[:, :64] = 1.0
    enc = fl.encode(w)
    assert enc.offsets.tolist() == [0, 128 * 64, 128 * 64]
    assert torch.equal(fl.decode(enc), w)


def test_tile_width_must_suit_the_swizzle():
    with pytest.raises(ValueError, match="multiple of 64"):
        fl.encode(torch.ones(8, 8), tile_m=8, tile_k=32)


def test_load_sparse_compute_dense_equals_dense():
    w = _sparse(300, 200, 0.8, seed=1)
    x = torch.randn(3, 7, 200, generator=torch.Generator().manual_seed(2))
    out = fl.lscd_matmul(fl.encode(w), x)
    assert out.shape == (3, 7, 300)
    torch.testing.assert_close(out, x @ w.t(), atol=1e-5, rtol=1e-5)


def test_traffic_model_counts_items_and_offsets_and_falls_with_sparsity():
    w = _sparse(256, 128, 0.8, seed=4)
    enc = fl.encode(w)
    assert fl.traffic_bytes(enc) == 4 * enc.items + 4 * (enc.tiles + 1)
    assert fl.dense_bytes((256, 128)) == 2 * 256 * 128
    dense = fl.encode(torch.ones(256, 128))
    assert fl.traffic_bytes(dense) > 2 * fl.dense_bytes((256, 128)) - 1  # a dense matrix costs twice fp16
    ratios = [fl.traffic_bytes(fl.encode(_sparse(256, 128, s, seed=5))) / fl.dense_bytes((256, 128))
              for s in (0.5, 0.6, 0.7, 0.8, 0.9)]  # fmt: skip
    assert all(b < a for a, b in itertools.pairwise(ratios))
    assert ratios[0] > 0.95 and ratios[3] < 0.45  # break-even near 50%, ~0.4 at 80% (+ padding, offsets)


def test_run_on_random_llama_is_wanda_plus_a_passing_format_check(random_model, calib_ids):
    reference = copy.deepcopy(random_model)
    wanda.prune(reference, calib_ids, wanda.Config(sparsity=0.8), Context())
    spec = registry.METHODS["flash-llm"]
    config = runner.method_config(spec, {})
    outcome = runner.apply_method(random_model, spec, config, calib_ids, Context()).outcome
    d = outcome.details
    assert outcome.kind == "stand-in" and d["sparsity"] == 0.8
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), random_model.state_dict().values(),
                                                  strict=True))  # fmt: skip
    assert (
        d["roundtrip_exact"] and d["linears_mismatched"] == [] and d["linears_checked"] == d["linears"] == 14
    )
    assert d["max_abs_diff_linear"] <= 1e-5 and d["max_abs_diff_logits"] <= 1e-4
    assert d["bytes_ratio"] < 0.45 and d["items"] >= d["nonzeros"]


def test_the_check_catches_a_corrupted_encoding(random_model, calib_ids):
    wanda.prune(random_model, calib_ids, wanda.Config(sparsity=0.8), Context())
    from reference_impls.harness.layerwise import iter_decoder_linears

    encoded = {n: fl.encode(lin.weight.detach()) for n, lin in iter_decoder_linears(random_model)}
    bad = "layers.1.mlp.up_proj"
    encoded[bad].values[0] += 1.0
    diffs: dict[str, float] = {}
    mismatched: set[str] = set()
    with torch.inference_mode(), fl.through_tiled_csl(random_model, encoded, diffs, mismatched):
        random_model(calib_ids[:1])
    assert mismatched == {bad} and len(diffs) == 14
    assert all(
        "forward" not in vars(lin) for _n, lin in iter_decoder_linears(random_model)
    )  # unpatched after


def test_reproduce_on_random_llama_gives_a_claim_and_the_bytes_figure():
    from reference_impls.harness.data import pydoc_corpus, token_data
    from reference_impls.harness.models import byte_tokenizer, random_llama

    spec = registry.PAPERS["flash-llm"]
    options = runner.paper_options(spec, {"model": "random-llama"})
    plans = runner.plan_runs(spec, options)
    data = token_data(byte_tokenizer(), pydoc_corpus(), nsamples=4, seqlen=64, eval_tokens=256, seed=0)
    runs = runner.compare(random_llama(seed=0), byte_tokenizer(), data, plans, options, ppl=False,
                          log=lambda _m: None)  # fmt: skip
    assert all(r.metrics.ppl is None for r in runs)  # metrics=(): no perplexity anywhere
    results = registry.Results({r.label: r.metrics for r in runs}, {r.label: r.outcome for r in runs})
    judged = spec.check(results)
    holds, reason = judged.holds, judged.reason
    assert holds, reason  # the format check is exact on any weights
    (figure,) = spec.figures(results)
    assert figure.series[0].x == [50, 60, 70, 80, 90]
    sparse, dense = figure.series[0].y, figure.series[1].y
    assert all(b < a for a, b in itertools.pairwise(sparse)) and len(set(dense)) == 1


def test_kb_prune_flash_llm_is_allowed_but_training_stand_ins_are_refused():
    assert registry.savable_method("flash-llm").kind == "stand-in"
    with pytest.raises(KBError, match="no pruned model to save"):
        registry.savable_method("bitnet-b158")


def test_kb_prune_flash_llm_saves_the_wanda_model_that_loads_in_a_fresh_process(tmp_path, capsys):
    from savedmodels import fresh_process

    from kb_cli.main import main

    save = tmp_path / "pruned"
    small = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]
    assert main(["prune", "flash-llm", *small, "--save", str(save)]) == 0
    capsys.readouterr()
    out = fresh_process(save, tmp_path)
    assert out["layers"] == 2 and len(out["tokens"]) == 8 + 6
