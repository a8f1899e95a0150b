"""LLM-Pruner on `random-llama`: which layers it prunes, how many groups, the analytic size, recovery."""

from __future__ import annotations

import copy

import pytest
import torch

from kb.errors import KBError
from reference_impls import llm_pruner
from reference_impls.harness.contract import Context
from reference_impls.harness.models import random_llama
from reference_impls.primitives import groups as G


def test_pruned_layers_scale_upstreams_first_four_and_last_two():
    assert llm_pruner.pruned_layers(32) == list(range(4, 30))  # upstream: layers [4, 30) of LLaMA-7B
    assert llm_pruner.pruned_layers(30) == list(range(4, 28))  # SmolLM2
    assert llm_pruner.pruned_layers(4) == [1, 2, 3]
    assert llm_pruner.pruned_layers(6, keep_first=0, keep_last=5) == [0]
    assert llm_pruner.pruned_layers(6, keep_first=4, keep_last=3) == []


@pytest.mark.parametrize("attention", ["kv-head", "q-head"])
def test_prune_removes_the_ratio_in_the_middle_layers_only(calib_ids, attention):
    dense = random_llama(seed=0, layers=6)
    model = copy.deepcopy(dense)
    config = llm_pruner.Config(ratio=0.25, attention=attention)
    outcome = llm_pruner.prune(model, calib_ids, config, Context())
    layers = outcome.details["pruned_layers"]
    assert layers == [1, 2, 3, 4, 5]  # round(6 * 4/32) = 1 kept first, round(6 * 2/32) = 0 kept last
    for i in range(6):
        heads, kv = G.attention_widths(model, i)
        inter = G.mlp_width(model, i)
        if i in layers:
            assert inter == 128 - 32  # a quarter of 128 channels
            assert (heads, kv) == (
                (2, 1) if attention == "kv-head" else (2, 2)
            )  # 1 of 2 KV groups; 1 of 2 q heads each
        else:
            assert (heads, kv, inter) == (4, 2, 128)
            assert all(
                torch.equal(a, b)
                for a, b in zip(
                    model.model.layers[i].state_dict().values(),
                    dense.model.layers[i].state_dict().values(),
                    strict=True,
                )
            )
    removed = sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in model.parameters())
    per_layer = 32 * 3 * 64 + (2 * 2 + 2 if attention == "kv-head" else 2 * 2) * 16 * 64
    assert (
        removed
        == len(layers) * per_layer
        == outcome.details["params_before"] - outcome.details["params_after"]
    )


def test_taylor_removes_the_groups_with_the_lowest_taylor_scores(calib_ids):
    from reference_impls.primitives.importance import group_importance

    dense = random_llama(seed=0, layers=4)
    family = G.mlp_family(dense, 2)
    examples = calib_ids[:10, :64]
    scores = group_importance(dense, [family], "taylor", tokens=examples)[family]
    model = copy.deepcopy(dense)
    llm_pruner.prune(model, calib_ids, llm_pruner.Config(), Context())
    keep = sorted(range(128), key=lambda u: (float(scores[u]), u))[32:]
    torch.testing.assert_close(model.model.layers[2].mlp.gate_proj.weight,
                               dense.model.layers[2].mlp.gate_proj.weight[sorted(keep)])  # fmt: skip


def test_lora_recovery_keeps_the_shapes_and_reports_its_budget(calib_ids):
    plain, healed = random_llama(seed=0, layers=4), random_llama(seed=0, layers=4)
    llm_pruner.prune(plain, calib_ids, llm_pruner.Config(), Context())
    out = llm_pruner.prune(healed, calib_ids, llm_pruner.Config(recovery_steps=3, recovery_batch=2, lora_lr=1e-3),
                           Context())  # fmt: skip
    assert {n: p.shape for n, p in plain.named_parameters()} == {
        n: p.shape for n, p in healed.named_parameters()
    }
    assert out.details["recovery"]["steps"] == 3 and out.details["recovery"]["tokens"] == 3 * 2 * 64
    assert not torch.equal(
        plain.model.layers[1].mlp.down_proj.weight, healed.model.layers[1].mlp.down_proj.weight
    )


def test_bad_settings_are_one_line_errors(calib_ids):
    with pytest.raises(KBError, match="no layer left"):
        llm_pruner.prune(
            random_llama(seed=0, layers=2), calib_ids, llm_pruner.Config(keep_first=2), Context()
        )
    with pytest.raises(KBError, match="nothing to prune"):
        llm_pruner.prune(
            random_llama(seed=0, layers=2),
            calib_ids,
            llm_pruner.Config(attention="none", mlp=False),
            Context(),
        )


SMALL = ["--model", "random-llama", "--nsamples", "8", "--seqlen", "64", "--eval-tokens", "256"]


def test_kb_prune_writes_a_smaller_model_that_loads_with_one_call(tmp_path, capsys):
    from kb_cli.main import main
    from reference_impls.harness.models import load_model

    save = tmp_path / "pruned"
    assert main(["prune", "llm-pruner", *SMALL, "--set", "recovery_steps=2", "--save", str(save)]) == 0
    assert "llm-pruner (width)" in capsys.readouterr().out
    loaded = load_model(str(save), "cpu")
    c = loaded.model.config  # both of 2 layers are pruned alike: a stock LLaMA config with smaller widths
    assert (c.model_type, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) == (
        "llama",
        96,
        2,
        1,
    )
    out = loaded.model.generate(
        torch.tensor([[1, 2, 3]]), max_new_tokens=4, min_new_tokens=4, do_sample=False
    )
    assert out.shape == (1, 7)
    assert sum(p.numel() for p in loaded.model.parameters()) < sum(
        p.numel() for p in random_llama().parameters()
    )


def test_kb_reproduce_records_every_arm_at_the_same_size(tmp_path, capsys):
    import json

    from kb_cli.main import main

    out = tmp_path / "r.json"
    rc = main(
        [
            "reproduce",
            "llm-pruner",
            *SMALL,
            "--probe-items",
            "20",
            "--set",
            "recovery_batch=2",
            "--json",
            str(out),
        ]
    )
    assert rc in (0, 1)
    record = json.loads(out.read_text())
    runs = {r["label"]: r for r in record["runs"]}
    assert list(runs) == ["dense", "taylor", "l2", "random", "taylor-lora"]
    sizes = {runs[k]["metrics"]["size"]["params_total"] for k in ("taylor", "l2", "random", "taylor-lora")}
    assert len(sizes) == 1 and sizes.pop() < runs["dense"]["metrics"]["size"]["params_total"]
    assert (
        runs["taylor"]["metrics"]["speed"]["prefill_speedup"] > 0 and runs["l2"]["metrics"]["speed"] is None
    )
    assert runs["taylor-lora"]["outcome"]["details"]["recovery"]["steps"] == 20
    assert runs["taylor"]["outcome"]["shapes"]["model.layers.1.mlp.gate_proj.weight"] == [96, 64]
    capsys.readouterr()


def test_bad_cli_input_is_one_line(capsys):
    from kb_cli.main import main

    assert main(["reproduce", "llm-pruner", "--sparsity", "0.5"]) == 2
    assert "--sparsity does not apply to llm-pruner (width)" in capsys.readouterr().err
    assert main(["reproduce", "llm-pruner", "--set", "ratio=1.5"]) == 2
    assert "llm_pruner option ratio" in capsys.readouterr().err
    assert main(["reproduce", "llm-pruner", "--set", "importance=taylor"]) == 2
    assert "fixed by run 'taylor'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_llama_compacts_to_the_analytic_size_and_reloads_in_a_fresh_process(tmp_path):
    import json
    import subprocess
    import sys

    from reference_impls.harness.models import load_model
    from reference_impls.harness.structure import save_model

    loaded = load_model("tiny-llama", "cpu")
    model, before = loaded.model, sum(p.numel() for p in loaded.model.parameters())
    calib = loaded.tokenizer("def f(x):\n    return x + 1\n" * 20, return_tensors="pt")["input_ids"][:, :64]
    out = llm_pruner.prune(model, calib.repeat(2, 1), llm_pruner.Config(num_examples=2), Context())
    assert out.details["pruned_layers"] == list(range(4, 28))
    # per pruned layer: one KV group of 3 query heads ((2 x 3 + 2) x 64 x 576) and 384 MLP channels (3 x 576 each)
    assert before - sum(p.numel() for p in model.parameters()) == 24 * (
        (2 * 3 + 2) * 64 * 576 + 384 * 3 * 576
    )
    c = model.config
    assert c.layer_num_attention_heads == [9] * 4 + [6] * 24 + [9] * 2
    assert c.layer_intermediate_sizes == [1536] * 4 + [1152] * 24 + [1536] * 2
    prompt = calib[:, :8]
    with torch.inference_mode():
        expected = model.generate(prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0].tolist()
    save_model(model, loaded.tokenizer, tmp_path / "out")
    script = (
        "import json, sys, torch\nfrom transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        f"out = m.generate(torch.tensor({prompt.tolist()}), max_new_tokens=5, min_new_tokens=5, do_sample=False)\n"
        "print(json.dumps(out[0].tolist()))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
