"""`kb prune` for essential sparsity, RIA, DSnoT, BESA and LLM Surgeon: the saved model loads in a fresh
process, generates what the pruned model generates here, and keeps the requested sparsity."""

from __future__ import annotations

import pytest
from savedmodels import fresh_process, greedy

from kb_cli.main import main

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64"]


@pytest.mark.parametrize(
    ("method", "args", "sparsity"),
    [
        ("global-magnitude", ["--sparsity", "0.4"], 0.4),
        ("ria", ["--pattern", "2:4", "--set", "permute=heuristic"], 0.5),
        ("dsnot", ["--sparsity", "0.6"], 0.6),
        ("besa", ["--sparsity", "0.6", "--set", "epochs=1"], 0.6),
        ("llm-surgeon", ["--sparsity", "0.3", "--set", "shots=2"], 0.3),
    ],
)
def test_prune_saves_a_model_that_loads_and_generates(tmp_path, capsys, method, args, sparsity):
    from transformers import AutoModelForCausalLM

    save = tmp_path / method
    assert main(["prune", method, *SMALL, *args, "--save", str(save)]) == 0
    capsys.readouterr()
    model = AutoModelForCausalLM.from_pretrained(save).eval()
    weights = [
        m.weight for layer in model.model.layers for m in layer.modules() if type(m).__name__ == "Linear"
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert sparsity - 1 / 64 <= zeros <= sparsity + 1 / 64  # per-row rounding over 64 inputs at most
    got = fresh_process(save, tmp_path)
    assert got["tokens"] == greedy(model)[0].tolist()
