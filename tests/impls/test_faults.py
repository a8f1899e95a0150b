"""Inputs and outputs that are not what they claim, on random-llama and tiny configs built in-process:
output paths refused before any work, failed writes, damaged datasets and model directories, model families
the harness prunes (LLaMA, Qwen2, Mistral, OPT) and the one it refuses up front (GPT-2's Conv1D)."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from kb_cli.main import main
from reference_impls.harness.models import byte_tokenizer

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]


def _one_line(capsys, argv, *, code=2) -> tuple[str, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("kb: error: ")]
    assert rc == code and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, (rc, err)
    return errors[0], err


# ---- output paths, checked before the model is loaded ----------------------------------------------------


def test_output_paths_that_cannot_be_written_are_refused_before_loading(tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    cases = [
        (
            ["reproduce", "wanda", *SMALL, "--json", str(afile / "r.json")],
            "file.txt is a file, not a directory",
        ),
        (["reproduce", "wanda", *SMALL, "--json", str(tmp_path)], "is a directory, not a file"),
        (["prune", "wanda", *SMALL, "--save", str(afile / "pruned")], "file.txt is a file, not a directory"),
        (["prune", "wanda", *SMALL, "--save", str(afile), "--force"], "is a file, not a directory"),
    ]
    for argv, needle in cases:
        line, err = _one_line(capsys, argv)
        assert needle in line and "kb: loaded" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"] and afile.read_text() == "x"


def test_unwritable_directory_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import kb.fsutil

    def denied(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(
        kb.fsutil.tempfile, "mkstemp", denied
    )  # root ignores mode bits; refuse the probe instead
    line, err = _one_line(capsys, ["reproduce", "wanda", *SMALL, "--json", str(tmp_path / "out" / "r.json")])
    assert "is not writable (Permission denied)" in line and "kb: loaded" not in err
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_results_or_model_is_one_line(tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    import kb.fsutil

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kb.fsutil.os, "fsync", full)
    line, _ = _one_line(capsys, ["reproduce", "wanda", *SMALL, "--json", str(tmp_path / "r.json")])
    assert "cannot write" in line and "No space left on device" in line
    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", full)
    line, _ = _one_line(capsys, ["prune", "magnitude", *SMALL, "--save", str(tmp_path / "pruned")])
    assert f"cannot save the model to {tmp_path / 'pruned'}: No space left on device" in line
    assert list(tmp_path.iterdir()) == []


# ---- datasets ---------------------------------------------------------------------------------------------


def test_dataset_files_that_are_binary_or_too_short(tmp_path, capsys):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"valid utf-8 text\x00with a NUL\n" * 100)
    short = tmp_path / "short.txt"
    short.write_text("a line of text that is long enough to calibrate with sixty four tokens or so.\n" * 12)
    for path, needle in [(binary, "looks binary"), (nul, "looks binary"),
                         (short, "fewer than the 256 requested (4 windows of 64)")]:  # fmt: skip
        line, _ = _one_line(capsys, ["reproduce", "wanda", *SMALL, "--dataset", str(path), "--no-save"])
        assert needle in line, line
    line, _ = _one_line(capsys, ["reproduce", "wanda", *SMALL, "--dataset", str(short), "--no-save"])
    assert "ask for --eval-tokens 192 or fewer" in line


# ---- model directories ------------------------------------------------------------------------------------


def _config(family: str):
    from transformers import GPT2Config, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

    common = {
        "vocab_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    }
    return {
        "llama": lambda: LlamaConfig(hidden_size=64, intermediate_size=128, num_key_value_heads=2, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=64, intermediate_size=128, num_key_value_heads=2, **common),
        "mistral": lambda: MistralConfig(
            hidden_size=64, intermediate_size=128, num_key_value_heads=2, **common
        ),
        "opt": lambda: OPTConfig(hidden_size=64, ffn_dim=128, word_embed_proj_dim=64, **common),
        "gpt2": lambda: GPT2Config(vocab_size=256, n_positions=256, n_embd=64, n_layer=2, n_head=4),
    }[family]()


def _model_dir(tmp_path, family: str, *, weights: bool = True, tokenizer: bool = True):
    from transformers import AutoModelForCausalLM

    path = tmp_path / family
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(family))
    if weights:
        model.save_pretrained(path)
    else:
        path.mkdir()
        model.config.save_pretrained(path)
    if tokenizer:
        byte_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "opt"])
def test_supported_families_are_really_pruned(tmp_path, capsys, family):
    from transformers import AutoModelForCausalLM

    path = _model_dir(tmp_path, family)
    save = tmp_path / "pruned"
    argv = ["prune", "wanda", *SMALL, "--model", str(path), "--sparsity", "0.5", "--save", str(save)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "decoder sparsity 0.500" in capsys.readouterr().out
    pruned = AutoModelForCausalLM.from_pretrained(save)
    linears = [
        m
        for m in pruned.modules()
        if isinstance(m, torch.nn.Linear) and m is not pruned.get_output_embeddings()
    ]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    assert zeros >= 0.45 * sum(m.weight.numel() for m in linears)


def test_gpt2_conv1d_is_refused_before_any_weight_is_read(tmp_path, capsys):
    path = _model_dir(tmp_path, "gpt2", weights=False)  # no weights at all: the refusal must come first
    for argv in (["reproduce", "wanda", *SMALL, "--model", str(path), "--no-save"],
                 ["prune", "magnitude", *SMALL, "--model", str(path), "--save", str(tmp_path / "o")]):  # fmt: skip
        line, err = _one_line(capsys, argv)
        assert "GPT2LMHeadModel is not supported" in line and "Conv1D" in line and "kb: loaded" not in err
    assert not (tmp_path / "o").exists()


def test_gpt2_refused_also_when_loaded_some_other_way(tmp_path):
    from transformers import AutoModelForCausalLM

    from kb.errors import KBError
    from reference_impls.harness.models import check_supported

    with pytest.raises(KBError, match="Conv1D"):
        check_supported(AutoModelForCausalLM.from_config(_config("gpt2")), "gpt2")
    check_supported(AutoModelForCausalLM.from_config(_config("opt")), "opt")


def test_broken_model_directories(tmp_path, capsys):
    base = _model_dir(tmp_path, "llama", weights=False)
    config = json.loads((base / "config.json").read_text())
    cases = []
    broken = tmp_path / "broken-json"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", ')
    cases.append((broken, "is not valid JSON"))
    untyped = tmp_path / "no-type"
    untyped.mkdir()
    (untyped / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "model_type"}))
    cases.append((untyped, "names no model_type"))
    unknown = tmp_path / "unknown-arch"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    byte_tokenizer().save_pretrained(unknown)
    cases.append((unknown, "'no-such-arch' is not an architecture this transformers knows"))
    no_tok = _model_dir(tmp_path / "t", "llama", tokenizer=False)
    cases.append((no_tok, "has no tokenizer"))
    bad_tok = _model_dir(tmp_path / "b", "llama")
    (bad_tok / "tokenizer.json").write_text("{ not json")
    cases.append((bad_tok, f"cannot load the tokenizer from {bad_tok}: "))
    truncated = _model_dir(tmp_path / "w", "llama")
    with open(truncated / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    cases.append((truncated, f"cannot load the weights from {truncated}: "))
    for path, needle in cases:
        line, _ = _one_line(
            capsys, ["prune", "magnitude", *SMALL, "--model", str(path), "--save", str(tmp_path / "o")]
        )
        assert needle in line, line
    assert not (tmp_path / "o").exists()


# ---- no silent no-ops -------------------------------------------------------------------------------------


def test_a_method_that_changes_nothing_is_an_error_not_a_result(tmp_path, capsys, monkeypatch):
    from kb.results import Outcome
    from reference_impls import magnitude

    monkeypatch.setattr(magnitude, "prune", lambda model, calib, config, ctx: Outcome(kind="weight-sparsity"))
    out = tmp_path / "r.json"
    line, _ = _one_line(capsys, ["reproduce", "wanda", *SMALL, "--json", str(out)], code=1)
    assert "method magnitude broke its contract" in line
    assert not out.exists()
