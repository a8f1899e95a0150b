"""`kb reproduce PAPER --protocol paper`: the paper's protocol on a given model, beside the record's rows.

Run on `random-llama` with a local text file standing in for WikiText-2: the numbers are recomputed here from the
file (our windows, the plain evaluation), the rows are the record's own, and every departure from the paper's
protocol is named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from kb import protocols
from kb.paper_results import PaperResult
from kb_cli.main import main
from reference_impls import registry
from reference_impls.harness import paper_protocol
from reference_impls.harness.data import file_corpus, tokenize
from reference_impls.harness.evaluate import perplexity
from reference_impls.harness.models import load_model

SHRINK = ["--nsamples", "4", "--max-windows", "3", "--seqlen", "256"]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "stand-in.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics))[:40000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random LLaMA saved as a local model directory, as a user's downloaded checkpoint would be."""
    from reference_impls.harness.models import byte_tokenizer, random_llama
    from reference_impls.harness.structure import save_model

    path = tmp_path_factory.mktemp("protocol-model") / "model"
    save_model(random_llama(0), byte_tokenizer(), path)
    return path


def test_wanda_beside_the_record_row(text: Path, model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.json"
    argv = ["reproduce", "wanda", "--model", str(model_dir), "--protocol", "paper", "--dataset", str(text),
            "--paper-model", "LLaMA-2-7B", *SHRINK, "--json", str(out)]  # fmt: skip
    assert main(argv) == 1  # a random model is nowhere near LLaMA-2-7B's numbers
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert [a["method"] for a in record["arms"]] == ["dense", "wanda"]
    # our dense number, recomputed from the file: its evaluation part, 256-token windows, the first 3
    loaded = load_model(str(model_dir), "cpu")
    stream = tokenize(loaded.tokenizer, file_corpus(text).eval_text)
    windows = stream[: 3 * 256].reshape(3, 256)
    assert record["arms"][0]["ppl"] == pytest.approx(perplexity(loaded.model, windows), rel=1e-9)
    assert record["arms"][1]["ppl"] != record["arms"][0]["ppl"]  # Wanda changed the model
    # beside the record's own rows for LLaMA-2-7B on WikiText-2 (dense 5.12, Wanda at 50% 6.42)
    rows = {r["method"]: r for r in record["rows"]}
    assert rows["dense"]["value"] == 5.12 and rows["wanda"]["value"] == 6.42
    for arm in record["arms"]:
        row = rows[arm["method"]]
        assert row["relative"] == pytest.approx((arm["ppl"] - row["value"]) / row["value"])
        assert row["within"] is False
    assert "6.420" in printed and "5.120" in printed and "differs from the paper by" in printed
    # every departure from Wanda's protocol is named
    differences = " | ".join(record["differences"])
    for expected in ("stands in for the paper's wikitext2 test", "256 tokens instead of the paper's 1024",
                     "4 samples instead of 128", "the first 3 of", "4096 in the record's LLaMA-2-7B rows"):  # fmt: skip
        assert expected in differences
    assert record["ran"]["window"] == 256 and record["ran"]["windows"] == 3
    assert record["ran"]["calibration"] == {"dataset": str(text), "split": "calibration part", "samples": 4,
                                            "seqlen": 256}  # fmt: skip


def test_a_matching_row_within_the_tolerance(text: Path, monkeypatch) -> None:
    """A row 2% above our number matches within 5% and not within 1%; the verdict says which."""
    first = paper_protocol.run_protocol("wanda", model="random-llama", dataset=str(text), paper_model="x",
                                        window=256, nsamples=4, max_windows=2)  # fmt: skip
    assert first.rows == [] and not first.matches and "no row of the record matches" in first.verdict
    ours = {a.method: a.ppl for a in first.arms}
    source = {"url": "https://example.org/table", "locator": "Table 1"}
    fake = [
        PaperResult(model="Random-Llama", dataset="wikitext2", metric="perplexity", method="wanda",
                    setting={"sparsity": 0.5}, value=ours["wanda"] * 1.02, source=source),
        PaperResult(model="Random-Llama", dataset="wikitext2", metric="perplexity", method="wanda",
                    setting={"sparsity": 0.6}, value=1.0, source=source),  # another setting: never matched
    ]  # fmt: skip
    monkeypatch.setattr(protocols, "paper_rows", lambda paper, root=None: fake)
    close = paper_protocol.run_protocol("wanda", model="random-llama", dataset=str(text), window=256,
                                        nsamples=4, max_windows=2, paper_model="random-llama")  # fmt: skip
    assert [(r.method, r.value) for r in close.rows] == [("wanda", fake[0].value)]
    assert close.matches and "wanda matches the paper within 5%" in close.verdict
    strict = paper_protocol.run_protocol("wanda", model="random-llama", dataset=str(text), window=256,
                                         nsamples=4, max_windows=2, paper_model="random-llama", tolerance=0.01)  # fmt: skip
    assert not strict.matches and "differs from the paper by -2.0%" in strict.verdict


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce", "h2o", "--protocol", "paper"], "no paper protocol is recorded for h2o"),
        (
            ["reproduce", "wanda", "--protocol", "paper", "--layers", "2"],
            "--layers does not go with --protocol",
        ),
        (["reproduce", "wanda", "--protocol", "paper", "--commit"], "--commit does not go with --protocol"),
        (["reproduce", "--all", "--protocol", "paper"], "--protocol paper runs one paper"),
        (["reproduce", "wanda", "--paper-model", "LLaMA-2-7B"], "--paper-model goes with --protocol paper"),
        (
            ["reproduce", "wanda", "--protocol", "paper", "--dataset", "/no/such/file"],
            "neither pydoc, wikitext2, c4",
        ),
        (
            ["reproduce", "wanda", "--protocol", "paper", "--dataset", "pydoc", "--model", "random-llama"],
            "evaluates on the paper's text",
        ),
        (["reproduce", "wanda", "--protocol", "paper", "--tolerance", "2"], "--tolerance must be a fraction"),
    ],
)
def test_bad_usage_is_one_line(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    assert main([*argv, "--json", str(tmp_path / "x.json")] if "--commit" not in argv and "--all" not in argv
                else argv) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_offline_without_a_file_names_the_way_out(no_datasets, capsys) -> None:
    assert main(["reproduce", "wanda", "--protocol", "paper", "--model", "random-llama", "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "pass --dataset FILE" in err and len(err.strip().splitlines()) == 1


def test_every_recorded_protocol_is_runnable_and_has_rows() -> None:
    """Each protocol names a runnable paper, a registered method that takes its setting, and at least one row of
    the record for that method, setting and dataset (what `--protocol paper` prints beside)."""
    known = protocols.load_protocols()
    assert known
    for paper, protocol in known.items():
        registry.paper_spec(paper)
        spec = registry.method_spec(protocol.method)
        assert "sparsity" in spec.targets or "pattern" in spec.targets
        rows = [r for r in protocols.paper_rows(paper) if r.method == protocol.method and r.metric == "perplexity"
                and r.dataset == protocol.dataset and r.setting.key() == protocol.setting.key()]  # fmt: skip
        assert rows, paper
        assert protocol.source.url.startswith("https://")


@pytest.mark.parametrize(
    ("name", "key"),
    [("meta-llama/Llama-2-7b-hf", "llama-2-7b"), ("LLaMA-2-7B", "llama-2-7b"), ("/models/llama_2_7b/", "llama-2-7b"),
     ("huggyllama/llama-7b", "llama-7b")],
)  # fmt: skip
def test_model_names_match_across_spellings(name: str, key: str) -> None:
    assert protocols.model_key(name) == key


def test_every_committed_result_carries_its_protocol(repo_root: Path) -> None:
    """The board's protocol line of each committed result: its corpus, window, stride and calibration."""
    from kb.results import Reproduction

    for path in sorted((repo_root / "reproductions").glob("*.json")):
        rep = Reproduction.model_validate_json(path.read_text())
        ran = protocols.ran_protocol(rep.dataset)
        assert ran["window"] == ran["stride"] == rep.dataset.evaluation.seqlen
        assert ran["windows"] == rep.dataset.evaluation.windows
        line = protocols.describe(ran)
        assert f"{rep.dataset.evaluation.seqlen}-token windows" in line and rep.dataset.corpus in line
        assert math.isfinite(ran["calibration"]["samples"])
