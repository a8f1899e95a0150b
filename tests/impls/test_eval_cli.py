"""`kb eval`: lm-evaluation-harness scores of a saved pruned model, offline, on the repository's local task.

The scores are checked against an independent computation: each item's choices scored by the reloaded model's
own log-likelihoods (the rule lm-eval's `acc` and `acc_norm` apply), so the test fails if lm-eval scored another
model, other items, or scored them another way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from savedmodels import SMALL

from kb_cli.main import main
from reference_impls.harness import lm_eval_bridge
from reference_impls.harness.models import load_model

ITEMS = lm_eval_bridge.LOCAL_TASKS / "kb_smoke" / "items.jsonl"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "wanda-50"
    assert main(["prune", "wanda", *SMALL, "--sparsity", "0.5", "--save", str(out)]) == 0
    return out


def _own_scores(directory: Path) -> tuple[float, float]:
    """acc and acc_norm of kb_smoke, computed here: sum of log p(" " + choice | context) per choice; acc_norm
    divides it by the length of the choice's text in characters (without the delimiter), as lm-eval does."""
    loaded = load_model(str(directory), "cpu")
    tok, model = loaded.tokenizer, loaded.model
    hits = hits_norm = 0
    items = [json.loads(line) for line in ITEMS.read_text(encoding="utf-8").splitlines()]
    for item in items:
        ctx = tok.encode(item["context"], add_special_tokens=False)
        lls, norms = [], []
        for choice in item["choices"]:
            cont = tok.encode(" " + choice, add_special_tokens=False)
            ids = torch.tensor([ctx + cont])
            with torch.inference_mode():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            ll = float(logp[torch.arange(len(ctx) - 1, ids.shape[1] - 1), torch.tensor(cont)].sum())
            lls.append(ll)
            norms.append(ll / len(choice))
        hits += max(range(len(lls)), key=lls.__getitem__) == item["label"]
        hits_norm += max(range(len(norms)), key=norms.__getitem__) == item["label"]
    return hits / len(items), hits_norm / len(items)


def test_eval_saved_model_offline(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "eval.json"
    assert main(["eval", str(saved), "--tasks", "kb_smoke", "--device", "cpu", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    (task,) = record["tasks"]
    assert task["task"] == "kb_smoke" and task["version"] == "1.0" and task["n_shot"] == 0
    assert task["items"] == task["items_total"] == 24
    acc, acc_norm = _own_scores(saved)
    assert task["metrics"]["acc"] == pytest.approx(acc, abs=1e-9)
    assert task["metrics"]["acc_norm"] == pytest.approx(acc_norm, abs=1e-9)
    assert set(task["stderr"]) == {"acc", "acc_norm"} and all(v > 0 for v in task["stderr"].values())
    import lm_eval

    assert record["versions"]["lm_eval"] == lm_eval.__version__
    assert record["config"]["prefix_token_id"] == 10  # byte tokenizer: no BOS/EOS, so a newline stands in
    assert record["model"] == str(saved) and record["notes"] == []
    table = capsys.readouterr().out
    assert "kb_smoke" in table and f"{acc:.4f}" in table


def test_limit_is_recorded_and_flagged(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "eval.json"
    task_file = lm_eval_bridge.LOCAL_TASKS / "kb_smoke" / "kb_smoke.yaml"  # a path works as well as the name
    assert main(["eval", str(saved), "--tasks", str(task_file), "--limit", "5", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["tasks"][0]["items"] == 5 and record["tasks"][0]["items_total"] == 24
    assert record["config"]["limit"] == 5 and any("--limit 5" in n for n in record["notes"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "kb_smok"], "did you mean kb_smoke"),
        (["--tasks", ","], "names no task"),
        (["--tasks", "kb_smoke", "--limit", "0"], "--limit must be a positive integer"),
        (["--tasks", "kb_smoke", "--num-fewshot", "-1"], "--num-fewshot must be a non-negative integer"),
        (["--tasks", "kb_smoke", "--include-path", "/nonexistent/dir"], "is not a directory"),
    ],
)
def test_bad_input_is_one_line_before_loading(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("reference_impls.harness.models.load_model", _must_not_load)
    out = tmp_path / "eval.json"
    assert main(["eval", "random-llama", *argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def _must_not_load(*_args, **_kwargs):
    raise AssertionError("the model was loaded before the input was checked")


def test_task_files_resolve_data_next_to_them(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\n')
    good = tmp_path / "mine.yaml"
    good.write_text(
        "task: mine\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/qa.jsonl\n"
    )
    spec = lm_eval_bridge.load_task_file(good)
    assert spec["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "data" / "qa.jsonl").resolve())
    missing = tmp_path / "missing.yaml"
    missing.write_text("task: m\ndataset_path: json\ndataset_kwargs:\n  data_files: nothere.jsonl\n")
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("task: t\nprocess_docs: !function utils.process\n")
    for path, message in ((missing, "does not exist"), (tagged, "--include-path")):
        assert main(["eval", "random-llama", "--tasks", str(path), "--no-save"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_missing_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    assert main(["eval", "random-llama", "--tasks", "kb_smoke", "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -e '.[eval]'" in err and len(err.splitlines()) == 1


def test_wikitext_gets_the_perplexity_caveat():
    raw = {"results": {"wikitext": {"alias": "wikitext", "word_perplexity,none": 20.0,
                                     "word_perplexity_stderr,none": "N/A"}},
           "versions": {"wikitext": 2.0}, "n-shot": {"wikitext": 0},
           "n-samples": {"wikitext": {"original": 62, "effective": 62}}}  # fmt: skip
    (score,) = lm_eval_bridge.scores(raw)
    assert score.metrics == {"word_perplexity": 20.0} and score.stderr == {} and score.version == "2.0"
    assert lm_eval_bridge.notes(["wikitext", "boolq"], None) == [lm_eval_bridge.WIKITEXT_NOTE]
    assert lm_eval_bridge.notes(["boolq", {"task": "kb_smoke"}], None) == []
