"""Structural edits keep a standard model: fewer layers or skipped sublayers, generation with a KV cache,
and saved directories that load in a fresh process and generate the same tokens."""

from __future__ import annotations

import json
import os

import pytest
import torch
from savedmodels import PROMPT, fresh_process, greedy

from reference_impls.harness import structure
from reference_impls.harness.kvcache import cache_bytes
from reference_impls.harness.metrics import model_size
from reference_impls.harness.models import byte_tokenizer, random_llama
from reference_impls.harness.speed import measure_speed


def test_remove_layers_renumbers_and_counts():
    model = random_llama(seed=0, layers=5)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    before = model_size(model)
    kept = [model.model.layers[i] for i in (0, 2, 4)]
    assert structure.remove_layers(model, [3, 1]) == [1, 3]
    assert list(model.model.layers) == kept and model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    after = model_size(model)
    assert before.params_total - after.params_total == 2 * per_layer
    assert after.layers == 3 and after.params_decoder == 3 * per_layer
    greedy(model)


@pytest.mark.parametrize("bad", [[5], [-1], [0, 1, 2, 3, 4]])
def test_remove_layers_rejects_bad_indices(bad):
    from kb.errors import KBError

    with pytest.raises(KBError):
        structure.remove_layers(random_llama(seed=0, layers=5), bad)


@pytest.mark.parametrize("part", ["attention", "mlp"])
def test_skipping_a_sublayer_equals_zeroing_its_output_projection(part):
    model = random_llama(seed=0, layers=3)
    zeroed = random_llama(seed=0, layers=3)
    with torch.no_grad():
        proj = (
            zeroed.model.layers[1].self_attn.o_proj
            if part == "attention"
            else zeroed.model.layers[1].mlp.down_proj
        )
        proj.weight.zero_()
    structure.skip_sublayers(model, **{part: [1]})
    with torch.inference_mode():
        torch.testing.assert_close(model(PROMPT).logits, zeroed(PROMPT).logits, rtol=1e-5, atol=1e-5)
    assert model_size(model).params_total < model_size(zeroed).params_total
    assert structure.skipped(model) == {
        "attention": [1] if part == "attention" else [],
        "mlp": [1] if part == "mlp" else [],
    }


def test_skipped_attention_in_layer_zero_keeps_generation_positions_right():
    model = random_llama(seed=0, layers=3)
    structure.skip_sublayers(model, attention=[0])
    greedy(model)
    sample = measure_speed(model, PROMPT, decode_tokens=3, repeats=1)
    dense = measure_speed(random_llama(seed=0, layers=3), PROMPT, decode_tokens=3, repeats=1)
    assert sample.kv_cache_bytes < dense.kv_cache_bytes


def test_kv_cache_bytes_are_measured_exactly():
    model = random_llama(seed=0, layers=3)
    sample = measure_speed(model, PROMPT, decode_tokens=5, repeats=2)
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    assert sample.kv_cache_bytes == 3 * 2 * c.num_key_value_heads * head_dim * (PROMPT.shape[1] + 5) * 4
    assert sample.prefill_ms > 0 and sample.decode_tokens_per_s > 0 and sample.repeats == 2
    with torch.inference_mode():
        out = model(PROMPT, use_cache=True)
    assert cache_bytes(out.past_key_values) == 3 * 2 * c.num_key_value_heads * head_dim * PROMPT.shape[1] * 4


@pytest.mark.parametrize("edit", ["layers", "sublayers"])
def test_saved_model_loads_in_a_fresh_process_and_generates_the_same(tmp_path, edit):
    model = random_llama(seed=0, layers=4)
    if edit == "layers":
        structure.remove_layers(model, [2])
    else:
        structure.skip_sublayers(model, attention=[0, 2], mlp=[3])
    expected = greedy(model)[0].tolist()
    structure.save_model(model, byte_tokenizer(), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    if edit == "sublayers":
        assert config["model_type"] == "kb_pruned_llama" and (tmp_path / "out" / "pruned_llama.py").is_file()
        assert config["skipped_attention"] == [0, 2] and config["skipped_mlp"] == [3]
    else:
        assert config["model_type"] == "llama" and config["num_hidden_layers"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert all(
        f.stat().st_mode & 0o777 == 0o666 & ~umask for f in (tmp_path / "out").iterdir()
    )  # readable by all
    got = fresh_process(tmp_path / "out", tmp_path)
    assert got["tokens"] == expected
    assert got["params"] == model_size(model).params_total
