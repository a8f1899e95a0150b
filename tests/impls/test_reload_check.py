"""`kb prune --save` proves what it wrote: parts the saved config cannot carry are refused before pruning
(exit 2), a save that does not reload into the same model is exit 1 with no directory left, and a normal save
reports the reload comparison."""

from __future__ import annotations

import pytest
import torch
from savedmodels import fresh_process, greedy
from torch import nn

from kb.errors import KBError
from kb_cli.main import main
from reference_impls.harness import models, reload_check, runner, session
from reference_impls.harness.models import load_model, random_llama
from reference_impls.harness.structure import check_savable

SMALL = ["--model", "random-llama", "--nsamples", "4", "--seqlen", "64", "--eval-tokens", "256"]
QUIET = lambda _msg: None  # noqa: E731


def _options(**target) -> runner.RunOptions:
    return runner.RunOptions(model="random-llama", nsamples=4, seqlen=64, eval_tokens=256, target=target)


def _one_line_error(capsys, argv, *, code):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("kb: error: ")]
    assert rc == code and len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "".join(err), err
    return errors[0]


def _with_biased_o_proj(monkeypatch, *, calls: list | None = None) -> None:
    """`--model random-llama` loads a model whose layer-1 `o_proj` carries a bias (as a width method that
    compensates removed channels with a bias would leave it) while its config says attention_bias=False."""
    real = models.load_model

    def load(name, device=None, *, seed=0):
        loaded = real(name, device, seed=seed)
        if name == "random-llama":
            old = loaded.model.model.layers[1].self_attn.o_proj
            new = nn.Linear(old.in_features, old.out_features, bias=True)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.copy_(torch.linspace(-2, 2, old.out_features))
            loaded.model.model.layers[1].self_attn.o_proj = new
        return loaded

    monkeypatch.setattr(runner, "load_model", load)
    monkeypatch.setattr(session, "load_model", load)  # calibration methods load through a Session
    if calls is not None:
        real_apply = runner.apply_method
        monkeypatch.setattr(runner, "apply_method", lambda *a, **k: calls.append(a) or real_apply(*a, **k))


def test_a_bias_the_config_cannot_carry_is_refused_before_pruning(tmp_path, capsys, monkeypatch):
    calls: list = []
    _with_biased_o_proj(monkeypatch, calls=calls)
    save = tmp_path / "pruned"
    for method in ("magnitude", "wanda"):  # without and with calibration data
        line = _one_line_error(capsys, ["prune", method, *SMALL, "--save", str(save)], code=2)
        assert "model.layers.1.self_attn.o_proj has a parameter 'bias' [64]" in line
        assert "attention_bias=False" in line and "set config.attention_bias = True" in line
    assert calls == [] and list(tmp_path.iterdir()) == []  # refused before the method ran


def test_without_the_refusal_the_reload_check_catches_the_lost_bias(tmp_path, monkeypatch):
    """The reviewer's case: the bias is silently dropped at reload; the logit comparison finds it (exit 1)."""
    _with_biased_o_proj(monkeypatch)
    monkeypatch.setattr(runner, "check_savable", lambda model, name: None)
    with pytest.raises(KBError) as err:
        runner.prune_to_dir("magnitude", _options(sparsity=0.3), tmp_path / "pruned", log=QUIET)
    assert err.value.code == 1 and "\n" not in err.value.message
    assert "model.layers.1.self_attn.o_proj.bias [64] is missing after the reload" in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_an_untied_head_under_a_tying_config_is_refused():
    model = random_llama(seed=0)
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    with pytest.raises(
        KBError, match=r"lm_head\.weight is a tensor of its own but the config says tie_word_embeddings"
    ):
        check_savable(model, "m")
    model.config.tie_word_embeddings = False
    check_savable(model, "m")  # now the config describes it


def _corrupt_saves(monkeypatch, how: str) -> None:
    """The saver writes one tensor wrong (`perturb`) or not at all (`drop`)."""
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM

    real = LlamaForCausalLM.save_pretrained

    def save_pretrained(self, directory, *args, **kwargs):
        real(self, directory, *args, **kwargs)
        path = f"{directory}/model.safetensors"
        tensors = load_file(path)
        name = "model.layers.0.mlp.down_proj.weight"
        if how == "drop":
            del tensors[name]
        else:
            tensors[name] = tensors[name] + 0.05
        save_file(tensors, path, metadata={"format": "pt"})

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", save_pretrained)


@pytest.mark.parametrize("how", ["perturb", "drop"])
def test_a_corrupted_save_is_exit_1_and_leaves_no_directory(tmp_path, capsys, monkeypatch, how):
    _corrupt_saves(monkeypatch, how)
    save = tmp_path / "pruned"
    line = _one_line_error(
        capsys, ["prune", "magnitude", *SMALL, "--sparsity", "0.3", "--save", str(save)], code=1
    )
    assert (
        "the saved model does not reproduce the pruned one" in line and f"nothing was saved to {save}" in line
    )
    assert (
        "its logits differ from the pruned model's by up to" in line
    )  # a missing tensor is filled at random
    assert list(tmp_path.iterdir()) == []  # neither the directory nor a temporary sibling


def test_a_corrupted_save_over_an_existing_directory_leaves_it_untouched(tmp_path, capsys, monkeypatch):
    save = tmp_path / "pruned"
    assert main(["prune", "magnitude", *SMALL, "--sparsity", "0.3", "--save", str(save)]) == 0
    before = {p.name: p.read_bytes() for p in save.iterdir()}
    _corrupt_saves(monkeypatch, "perturb")
    _one_line_error(capsys, ["prune", "wanda", *SMALL, "--save", str(save), "--force"], code=1)
    assert {p.name: p.read_bytes() for p in save.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]


@pytest.mark.parametrize(
    ("method", "target", "remote"),
    # a weight method, a depth method, a width method whose per-layer widths need the saved modeling file
    [("wanda", {}, False), ("shortgpt", {"layers": 1}, False), ("k-prune", {}, True)],
)
def test_a_normal_save_reports_its_reload_comparison(tmp_path, method, target, remote):
    save = tmp_path / "pruned"
    result = runner.prune_to_dir(method, _options(**target), save, log=QUIET)
    check = result["reload"]
    assert (
        check["prompts"] == len(reload_check.PROMPTS)
        and check["generated_tokens"] == reload_check.GENERATE_TOKENS
    )
    assert 0 <= check["max_abs_logit_diff"] <= check["relative_tolerance"] * check["logit_scale"]
    assert check["dtype"] == "float32" and check["relative_tolerance"] == 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]
    reloaded = load_model(str(save), "cpu").model
    assert (type(reloaded).__name__ == "KBPrunedLlamaForCausalLM") == remote
    if remote:  # the in-process reload runs the saved modeling file: a fresh process agrees with it
        assert fresh_process(save, tmp_path)["tokens"] == greedy(reloaded)[0].tolist()


def test_the_cli_prints_success_after_the_check(tmp_path, capsys):
    save = tmp_path / "pruned"
    assert main(["prune", "wanda", *SMALL, "--save", str(save)]) == 0
    captured = capsys.readouterr()
    assert (
        "kb: reloaded the saved model: logits within" in captured.err and f"saved to {save}" in captured.out
    )
