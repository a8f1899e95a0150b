"""`kb build --check` fails when a committed result is stale against the code that produced it."""

from __future__ import annotations

import json
from pathlib import Path

from kb_cli.main import main
from reference_impls.registry import paper_code, sweep_code
from reference_impls.registry.freshness import judge_results, reproduce_command, stale_results, sweep_command
from site_builder.inputs import load_reproductions, load_sweeps

COMMAND = "run `kb reproduce wanda --model fixture-model --commit`"


def _check(capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["build", "--check"])
    return rc, capsys.readouterr().err.splitlines()


def test_unchanged_code_passes_and_an_edited_implementation_fails(kb_root: Path, capsys) -> None:
    assert main(["build", "--no-mkdocs"]) == 0
    assert _check(capsys) == (0, [])
    impl = kb_root / "reference_impls" / "wanda.py"
    impl.write_text(impl.read_text(encoding="utf-8") + "\n# a change to the method\n", encoding="utf-8")
    rc, err = _check(capsys)
    assert rc == 1
    assert err == [
        "reproductions/wanda.json: stale: the code it ran changed since (reference_impls/wanda.py) and its "
        "behaviour is not fingerprinted at today's code (`kb fingerprint` says in seconds whether it moved); "
        + COMMAND
    ]
    impl.write_text(
        impl.read_text(encoding="utf-8").removesuffix("\n# a change to the method\n"), encoding="utf-8"
    )
    assert _check(capsys) == (0, [])


def test_an_edited_harness_file_fails_too(kb_root: Path, capsys) -> None:
    assert main(["build", "--no-mkdocs"]) == 0
    metrics = kb_root / "reference_impls" / "harness" / "metrics.py"
    metrics.write_text(
        metrics.read_text(encoding="utf-8").replace("def model_size", "def model_size "), encoding="utf-8"
    )
    rc, err = _check(capsys)
    assert rc == 1 and "reference_impls/harness/metrics.py" in err[0] and err[0].endswith(COMMAND)


def test_a_runnable_record_without_a_result_is_named_missing(kb_root: Path, capsys) -> None:
    assert main(["build", "--no-mkdocs"]) == 0
    (kb_root / "reproductions" / "wanda.json").unlink()
    assert main(["build", "--no-mkdocs"]) == 0  # the page without a result is rendered again
    rc, err = _check(capsys)
    missing = (
        "reproductions/wanda.json: missing: wanda is runnable but has no committed result; "
        "run `kb reproduce wanda --model tiny-llama --commit`"
    )
    assert rc == 1 and err == [missing]


def test_a_result_without_a_hash_is_stale(kb_root: Path, capsys) -> None:
    assert main(["build", "--no-mkdocs"]) == 0
    path = kb_root / "reproductions" / "wanda.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["code"]  # as in results written before hashes were recorded
    path.write_text(json.dumps(data), encoding="utf-8")
    rc, err = _check(capsys)
    assert rc == 1 and err == [
        "reproductions/wanda.json: stale: it records no code hash (written before results carried one); "
        + COMMAND
    ]


def _sweep(root: Path, code) -> dict:
    rep = json.loads((root / "reproductions" / "wanda.json").read_text(encoding="utf-8"))
    runs = [
        dict(rep["runs"][0], label="wanda@0.5", config={"sparsity": 0.5, "pattern": None, "scope": "row"})
    ]
    return {"name": "sparsity-wanda", "model": "fixture-model", "axis": "sparsity", "values": [0.5], "methods": ["wanda"],
            "dataset": rep["dataset"], "runs": runs, "code": code, "config": {"probe": False, "speed": False}}  # fmt: skip


def test_sweeps_are_checked_and_name_their_command(kb_root: Path, capsys) -> None:
    assert main(["build", "--no-mkdocs"]) == 0
    (kb_root / "reproductions" / "sweeps").mkdir()
    path = kb_root / "reproductions" / "sweeps" / "sparsity-wanda.json"
    path.write_text(
        json.dumps(_sweep(kb_root, sweep_code(["wanda"], kb_root).model_dump())), encoding="utf-8"
    )
    assert main(["build", "--no-mkdocs"]) == 0  # the sweep adds a plot
    assert _check(capsys) == (0, [])
    path.write_text(json.dumps(_sweep(kb_root, None)), encoding="utf-8")
    rc, err = _check(capsys)
    assert rc == 1 and err == [
        (
            "reproductions/sweeps/sparsity-wanda.json: stale: it records no code hash (written before results "
            "carried one); run `kb sweep wanda --sparsity 0.5 --model fixture-model --name sparsity-wanda --commit`"
        )
    ]


def test_refresh_commands_repeat_the_options_a_result_was_made_with(kb_root: Path) -> None:
    reps = load_reproductions(kb_root)
    rep = reps["wanda"]
    assert reproduce_command(rep) == "kb reproduce wanda --model fixture-model --commit"
    owl = rep.model_copy(update={"paper": "owl", "config": {"all_runs": True}})
    assert reproduce_command(owl) == "kb reproduce owl --model fixture-model --all-runs --commit"
    wanda_all = rep.model_copy(update={"config": {"all_runs": True}})  # wanda has no extra runs to ask for
    assert reproduce_command(wanda_all) == "kb reproduce wanda --model fixture-model --commit"
    assert stale_results(kb_root, reps, load_sweeps(kb_root)) == []
    assert rep.code == paper_code("wanda", kb_root)


def test_the_repository_results_are_judged_by_the_same_rule() -> None:
    """Every committed result in this checkout matches today's code, or is kept by its behaviour fingerprint (its
    code moved, what it computes did not), or is named with its command; never two of these."""
    root = Path(__file__).resolve().parents[2]
    reps, sweeps = load_reproductions(root), load_sweeps(root)
    judged = judge_results(root, reps, sweeps)
    lines = judged.stale
    assert lines == stale_results(root, reps, sweeps)
    stale = {line.split(":")[0] for line in lines}
    kept = set(judged.by_behaviour)
    for paper, rep in reps.items():
        path = f"reproductions/{paper}.json"
        fresh = rep.code is not None and rep.code == paper_code(paper, root)
        if fresh:
            assert path not in stale and path not in kept
        else:
            assert (path in stale) != (path in kept), path
    for line in lines:
        assert "run `kb reproduce " in line or "run `kb sweep " in line or "delete the file" in line


def test_sweep_command_round_trip() -> None:
    from kb.results import Sweep

    root = Path(__file__).resolve().parents[2]
    data = _sweep_for_command(root)
    sweep = Sweep.model_validate(data)
    assert (
        sweep_command(sweep)
        == "kb sweep shortgpt --layers 1,2 --model tiny-llama --name depth --speed --commit"
    )


def _sweep_for_command(root: Path) -> dict:
    rep = json.loads(
        (Path(__file__).parent / "fixtures" / "wanda.reproduction.json").read_text(encoding="utf-8")
    )
    return {"name": "depth", "model": "tiny-llama", "axis": "layers", "values": [1, 2], "methods": ["shortgpt"],
            "dataset": rep["dataset"], "runs": [rep["runs"][0]], "config": {"probe": True, "speed": True}}  # fmt: skip


def test_build_and_its_check_never_import_torch(kb_root: Path) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys\nfrom kb_cli.main import main\nrcs = [main(['build', '--no-mkdocs']), main(['build', '--check'])]\n"
        "print(rcs, [m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    env = {**os.environ, "KB_ROOT": str(kb_root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0] []", out.stderr[-2000:]
