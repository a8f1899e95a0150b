"""Helpers for tests that save pruned models: greedy tokens in this process, and in a fresh one.

Every pruned model a user can save must load in a fresh process and `generate`; these helpers are how the
structure, width and CLI tests check it. `save_checked` saves as `kb prune --save` does: the directory is
reloaded and its logits compared with the model in memory before it appears (`reload_check`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

PROMPT = torch.tensor([[5, 17, 99, 3, 42, 8, 77, 120]])
# `kb prune` options for a seconds-long run on random-llama (CLI tests of saved models)
SMALL = [
    "--model",
    "random-llama",
    "--nsamples",
    "4",
    "--seqlen",
    "32",
    "--eval-tokens",
    "64",
    "--device",
    "cpu",
]

_FRESH = """
import json, sys, torch
from transformers import AutoModelForCausalLM
path, remote, prompt = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if remote == "auto":  # only a directory that is not a stock LLaMA needs the flag
    remote = json.load(open(path + "/config.json"))["model_type"] != "llama"
else:
    remote = remote == "yes"
model = AutoModelForCausalLM.from_pretrained(path, **({"trust_remote_code": True} if remote else {})).eval()
out = model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False)
print(json.dumps({"tokens": out[0].tolist(), "layers": model.config.num_hidden_layers,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def greedy(model: torch.nn.Module, steps: int = 6) -> torch.Tensor:
    """Greedy tokens after PROMPT; cached and uncached generation must agree (a stale `layer_idx` or cache
    length shows up here)."""
    with torch.inference_mode():
        kwargs = {"max_new_tokens": steps, "min_new_tokens": steps, "do_sample": False}
        cached = model.generate(PROMPT, use_cache=True, **kwargs)
        plain = model.generate(PROMPT, use_cache=False, **kwargs)
    assert torch.equal(cached, plain)
    return cached


def fresh_process(path: Path, home: Path, *, remote: bool | None = None) -> dict:
    """Load `path` in a new interpreter with a clean environment and generate from PROMPT.

    `remote=None` passes `trust_remote_code=True` only for a directory that is not a stock LLaMA; True
    always passes it (the one documented call for every saved model)."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(home)}  # nothing from this process
    flag = "auto" if remote is None else ("yes" if remote else "no")
    argv = [sys.executable, "-c", _FRESH, str(path), flag, json.dumps(PROMPT[0].tolist())]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_checked(model: torch.nn.Module, directory: Path, tokenizer=None) -> dict:
    """Save `model` (with the byte tokenizer unless one is given) exactly as `kb prune --save` does: reloaded and
    compared with the model in memory before the directory is published; returns the comparison."""
    from reference_impls.harness import reload_check
    from reference_impls.harness.models import byte_tokenizer
    from reference_impls.harness.structure import save_model

    tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
    ref = reload_check.reference(model, tokenizer)
    return save_model(model, tokenizer, directory,
                      verify=lambda tmp: reload_check.verify(tmp, ref, device="cpu", shown=directory))  # fmt: skip
