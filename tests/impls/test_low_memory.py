"""`kb prune --low-memory`: one decoder layer at a time from safetensors, the in-memory path's masks exactly.

The large test writes a random LLaMA whose float32 weights exceed 2 GB (shard by shard, never whole in memory),
prunes it with Wanda in a child process and checks the child's peak resident memory stays under 1 GB, then
compares every tensor with the in-memory path and reloads the result in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kb_cli.main import main
from reference_impls.harness import models, streaming
from reference_impls.harness.data import token_data
from reference_impls.harness.random_checkpoint import write_random_llama
from reference_impls.harness.session import Session
from tests.impls.savedmodels import fresh_process

DATA = ["--nsamples", "4", "--seqlen", "32", "--eval-tokens", "64", "--device", "cpu"]


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / streaming.INDEX
    if not index.is_file():
        return load_file(directory / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for file in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        out.update(load_file(directory / file))
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 3-layer random LLaMA saved as one model.safetensors with its byte tokenizer."""
    out = tmp_path_factory.mktemp("lowmem") / "src"
    models.random_llama(seed=3, layers=3).save_pretrained(out)
    models.byte_tokenizer().save_pretrained(out)
    return out


@pytest.mark.parametrize("method", streaming.STREAMABLE)
def test_same_model_as_the_in_memory_path(method, source, tmp_path, capsys):
    common = ["prune", method, "--model", str(source), *DATA, "--sparsity", "0.6"]
    assert main([*common, "--save", str(tmp_path / "mem")]) == 0
    assert main([*common, "--low-memory", "--save", str(tmp_path / "low")]) == 0
    assert "one layer at a time" in capsys.readouterr().out
    mem, low = _tensors(tmp_path / "mem"), _tensors(tmp_path / "low")
    assert set(mem) == set(low)
    assert all(torch.equal(mem[k], low[k]) for k in mem)
    q = low["model.layers.1.self_attn.q_proj.weight"]
    if method == "wanda":  # 60% of every row: 38 of 64 columns
        assert ((q == 0).sum(1) == 38).all()
    assert abs(float((q == 0).float().mean()) - 0.6) < 0.02
    shards = sorted(p.name for p in (tmp_path / "low").glob("*.safetensors"))
    assert shards == [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]
    assert {"tokenizer.json", "config.json"} <= {p.name for p in (tmp_path / "low").iterdir()}
    home = tmp_path / "home"
    home.mkdir()
    assert fresh_process(tmp_path / "low", home) == fresh_process(tmp_path / "mem", home)


def test_sharded_bf16_checkpoint_keeps_its_dtype(source, tmp_path):
    """A sharded bf16 checkpoint: read by name across shards, pruned in float32, written back as bf16."""
    src = tmp_path / "bf16"
    src.mkdir()
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(source / "model.safetensors").items()}
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        file = f"model-{i:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, src / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (src / streaming.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (src / name).write_bytes((source / name).read_bytes())
    assert (
        main(["prune", "wanda", "--model", str(src), *DATA, "--low-memory", "--save", str(tmp_path / "o")])
        == 0
    )
    out = _tensors(tmp_path / "o")
    assert all(t.dtype == torch.bfloat16 for t in out.values())
    kept = out["model.layers.0.mlp.down_proj.weight"]
    original = tensors["model.layers.0.mlp.down_proj.weight"]
    assert torch.equal(
        kept[kept != 0], original[kept != 0]
    )  # surviving weights are the checkpoint's, bit for bit
    assert torch.equal(out["model.norm.weight"], tensors["model.norm.weight"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "magnitude", "--sparsity", "0.5"], "needs the whole model at once"),
        (["prune", "owl"], "needs the whole model at once"),
        (["prune", "wanda", "--device", "cuda"], None),  # one line either way: no CUDA here, or CPU-only path
    ],
)
def test_refusals_are_one_line(argv, message, source, tmp_path, capsys):
    save = tmp_path / "out"
    code = main([*argv, "--model", str(source), "--nsamples", "4", "--seqlen", "32", "--eval-tokens", "64",
                 "--low-memory", "--save", str(save)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not save.exists()
    if message:
        assert message in err


def test_needs_a_local_safetensors_directory(tmp_path, capsys):
    assert (
        main(
            [
                "prune",
                "wanda",
                "--model",
                "random-llama",
                *DATA,
                "--low-memory",
                "--save",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "local model directory" in capsys.readouterr().err
    bare = tmp_path / "bare"
    models.random_llama(seed=0).save_pretrained(bare)
    models.byte_tokenizer().save_pretrained(bare)
    (bare / "model.safetensors").unlink()
    capsys.readouterr()  # save_pretrained's progress bar
    assert (
        main(["prune", "wanda", "--model", str(bare), *DATA, "--low-memory", "--save", str(tmp_path / "p")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "safetensors" in err and len(err.splitlines()) == 1 and not (tmp_path / "p").exists()


# ---- larger than the memory it is given ----------------------------------------------------------------------
HIDDEN, INTERMEDIATE, LAYERS = 1536, 4096, 19  # 28.3M weights per layer: 2.15 GB of float32 in all


_PEAK = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)  # Linux reports KiB
sys.exit(code)
"""


@pytest.mark.slow
def test_a_model_larger_than_its_memory(tmp_path):
    src, out = tmp_path / "big", tmp_path / "pruned"
    assert write_random_llama(src, hidden=HIDDEN, intermediate=INTERMEDIATE, layers=LAYERS) > 2 * 1024**3
    kb = [sys.executable, "-c", "import sys; from kb_cli.main import run; sys.exit(run())"]
    argv = [
        *kb,
        "prune",
        "wanda",
        "--model",
        str(src),
        *DATA,
        "--sparsity",
        "0.5",
        "--low-memory",
        "--save",
        str(out),
    ]
    proc = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = int(proc.stdout.strip().splitlines()[-1])
    assert peak < 1024**3, f"peak RSS {peak / 2**20:.0f} MiB"
    # the in-memory path on the same weights and calibration: every tensor must match
    loaded = models.load_model(str(src), "cpu")
    data = token_data(
        loaded.tokenizer, Session().corpus("pydoc"), nsamples=4, seqlen=32, eval_tokens=64, seed=0
    )
    from reference_impls import wanda
    from reference_impls.harness.contract import Context

    wanda.prune(loaded.model, data.calib, wanda.Config(sparsity=0.5), Context())
    index = json.loads((out / streaming.INDEX).read_text())["weight_map"]
    state = loaded.model.state_dict()
    assert set(index) == set(state) - {"lm_head.weight"}  # tied head: stored once, as the embedding
    for name, file in index.items():
        with safe_open(str(out / file), framework="pt") as f:
            assert torch.equal(f.get_tensor(name), state[name]), name
    del loaded, state
    home = tmp_path / "home"
    home.mkdir()
    assert fresh_process(out, home)["layers"] == LAYERS
