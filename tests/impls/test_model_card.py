"""`kb prune --save` writes a model card and, with `--eval`, scores in it and in `.eval_results/` (the Hub's format).

The card's facts are checked against their sources: the parameter counts against the saved model, the code hash
against the registry, the arXiv id against the paper's record, the score against `kb eval`'s own result. A
depth-pruned save must load as a stock LLaMA (no `trust_remote_code`) in a fresh process and generate.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from savedmodels import SMALL, fresh_process

from kb.eval_record import EvalRecord, TaskScore
from kb.results import Machine
from kb_cli.main import main
from reference_impls import registry
from reference_impls.harness import model_card


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta


def _params(directory: Path) -> int:
    from safetensors import safe_open

    total = 0
    for shard in directory.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= int(d)
                total += n
    return total


def test_wanda_card_with_local_eval(tmp_path, capsys, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "wanda-50"
    argv = ["prune", "wanda", *SMALL, "--sparsity", "0.5", "--save", str(out), "--eval", "kb_smoke"]
    monkeypatch.setattr("sys.argv", ["kb", *argv])
    assert main(argv) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(text)
    assert meta["tags"][:2] == ["pruning", "wanda"] and "arxiv:2306.11695" in meta["tags"]
    assert "base_model" not in meta  # random-llama has no Hub origin: nothing is claimed
    assert meta["library_name"] == "transformers"
    assert "https://arxiv.org/abs/2306.11695" in text
    assert registry.sweep_code(["wanda"]).hash in text
    assert "kb prune wanda --model random-llama" in text and f"--save {out}" in text
    assert model_card.SPARSE_NOTE in text  # masked weights: no speed-up claimed
    params = _params(out)
    assert f"{params / 1e6:.2f}M -> {params / 1e6:.2f}M" in text  # unstructured: the count does not move
    # the score in the card is the one kb eval computes on the saved directory
    ev = tmp_path / "eval.json"
    assert main(["eval", str(out), "--tasks", "kb_smoke", "--json", str(ev)]) == 0
    acc = json.loads(ev.read_text(encoding="utf-8"))["tasks"][0]["metrics"]["acc"]
    assert f"| kb_smoke | acc | {acc:.4f} |" in text and "no (local data)" in text
    assert not (out / ".eval_results").exists()  # local data has no Hub dataset id


def test_depth_card_and_stock_reload_in_a_fresh_process(tmp_path, monkeypatch):
    out = tmp_path / "shortgpt-1"
    argv = ["prune", "shortgpt", *SMALL, "--layers", "1", "--save", str(out)]
    monkeypatch.setattr("sys.argv", ["kb", *argv])
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama" and "auto_map" not in config and config["num_hidden_layers"] == 1
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "decoder layers: 2 -> 1" in text and "no `trust_remote_code`" in text
    assert "trust_remote_code=True" not in text and model_card.SPARSE_NOTE not in text
    again = fresh_process(out, tmp_path, remote=False)
    assert again["layers"] == 1 and len(again["tokens"]) == 8 + 6
    assert f"{_params(out) / 1e6:.2f}M" in text


def _record(*scores: TaskScore) -> EvalRecord:
    machine = Machine(system="Linux", cpu="test cpu", cores=1, threads=1, device="cpu")
    return EvalRecord(model="m", source="m", tasks=list(scores), versions={"lm_eval": "0.4.13"}, machine=machine,
                      total_seconds=1.0, produced=dt.date(2026, 12, 7))  # fmt: skip


def _score(task: str, dataset: str | None, config: str | None, **metrics: float) -> TaskScore:
    return TaskScore(task=task, version="1.0", n_shot=0, items=10, items_total=10, metrics=metrics,
                     stderr={}, dataset=dataset, dataset_config=config)  # fmt: skip


def test_hub_eval_results_round_trip_through_huggingface_hub(tmp_path):
    from huggingface_hub import parse_eval_result_entries

    record = _record(_score("boolq", "aps/super_glue", "boolq", acc=0.625),
                     _score("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", acc=0.25, acc_norm=0.3),
                     _score("kb_smoke", "json", None, acc=0.5), _score("mine", str(tmp_path), None, acc=0.1))  # fmt: skip
    files = model_card.hub_entries(record)
    assert sorted(files) == ["arc_challenge.yaml", "boolq.yaml"]  # local builders and paths are left out
    (boolq,) = parse_eval_result_entries(files["boolq.yaml"])
    assert (boolq.dataset_id, boolq.task_id, boolq.value) == ("aps/super_glue", "boolq", 0.625)
    (arc,) = parse_eval_result_entries(files["arc_challenge.yaml"])
    assert arc.value == 0.3 and "acc_norm" in (arc.notes or "")  # the normalised accuracy papers quote
    # written into a card directory: the files, and a table replaced (not appended) on a second call
    directory = tmp_path / "model"
    directory.mkdir()
    model_card.write_card(directory, method="magnitude", kind="weight-sparsity", paper=None, base="org/base",
                          source="org/base", before=None, after={"layers": 2, "decoder_sparsity": 0.5}, config={},
                          command="kb prune magnitude", code_hash="sha256:" + "0" * 64, reload=None,
                          remote_code=False)  # fmt: skip
    assert _front_matter((directory / "README.md").read_text("utf-8"))["base_model"] == "org/base"
    for _ in range(2):
        written = model_card.add_evaluation(directory, record)
    assert sorted(p.name for p in written[1:]) == ["arc_challenge.yaml", "boolq.yaml"]
    loaded = yaml.safe_load((directory / ".eval_results" / "boolq.yaml").read_text("utf-8"))
    assert parse_eval_result_entries(loaded)[0].value == 0.625
    card = (directory / "README.md").read_text("utf-8")
    assert card.count("## Evaluation") == 1 and "| boolq | acc | 0.6250 |" in card


def test_update_card_refuses_a_directory_without_one(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    assert main(["eval", str(tmp_path), "--tasks", "kb_smoke", "--update-card", "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a directory with a model card written by kb prune" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [("tiny-llama", None, model_card.TINY_LLAMA_BASE), ("random-llama", None, None),
     ("meta-llama/Llama-2-7b-hf", None, "meta-llama/Llama-2-7b-hf"),
     ("/no/such/dir", {"_name_or_path": "Qwen/Qwen2-0.5B"}, "Qwen/Qwen2-0.5B"), ("/no/such/dir", {}, None)],
)  # fmt: skip
def test_base_model(name, config, expected):
    assert model_card.base_model(name, config) == expected


def test_eval_without_extra_is_refused_before_pruning(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    out = tmp_path / "never"
    assert main(["prune", "magnitude", *SMALL, "--save", str(out), "--eval", "kb_smoke"]) == 2
    assert "pip install" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("method", "extra", "kept", "remote"),
    [("oats", ["--set", "iterations=2"], True, False), ("flap", ["--params", "0.2"], False, True)],
)
def test_cards_of_a_merged_fit_and_of_output_biases(method, extra, kept, remote, tmp_path, monkeypatch):
    """OATS's card counts the sparse + low-rank fit's own parameters (no zeros to speak of: not the masked-weights
    note); FLAP's biases on o_proj / down_proj need the modeling file, and the card says why."""
    out = tmp_path / method
    argv = ["prune", method, *SMALL, *extra, "--save", str(out)]
    monkeypatch.setattr("sys.argv", ["kb", *argv])
    assert main(argv) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert (model_card.MERGED_NOTE in text) is kept and (model_card.SPARSE_NOTE in text) is False
    assert ("parameters of the sparse + low-rank fit:" in text) is kept
    assert ("trust_remote_code=True" in text) is remote and (model_card.REMOTE_NOTE in text) is remote
