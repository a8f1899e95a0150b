"""The command line: exit codes, one-line errors, filters, scaffolding; no torch on the fast path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kb_cli.main import main

DATA = Path(__file__).parent / "data"


@pytest.fixture
def one_paper(tmp_kb: Path) -> Path:
    (tmp_kb / "papers" / "demo-method.yaml").write_text((DATA / "base.yaml").read_text())
    (tmp_kb / "challenge" / "demo-method.md").write_text((DATA / "base.md").read_text())
    return tmp_kb


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kb: error: ")
    return lines[0]


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, contextlib, io\n"
        "from kb_cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help']) if False else None\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'jinja2', 'httpx', 'mkdocs') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: kb" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in _one_error_line(capsys.readouterr().err)


def test_list_filters_by_tag(one_paper, capsys):
    assert main(["list", "--tag", "type=unstructured", "--tag", "retrain=without", "--json"]) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ["demo-method"]
    assert main(["list", "--tag", "type=structured", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("type", "--tag expects AXIS=VALUE"),
        ("colour=red", "unknown axis 'colour'"),
        ("type=structred", "'structred' is not a type value (did you mean 'structured'?)"),
    ],
)
def test_bad_tag_filter_is_one_line_exit_2(one_paper, capsys, arg, message):
    assert main(["list", "--tag", arg]) == 2
    assert message in _one_error_line(capsys.readouterr().err)


def test_show_and_unknown_id(one_paper, capsys):
    assert main(["show", "demo-method"]) == 0
    out = capsys.readouterr().out
    assert "A Demonstration Record" in out and "Criteria  wanda" in out
    assert main(["show", "demo-methd"]) == 2
    assert "did you mean 'demo-method'" in _one_error_line(capsys.readouterr().err)


def test_list_refuses_an_invalid_catalogue(one_paper, capsys):
    path = one_paper / "papers" / "demo-method.yaml"
    path.write_text(path.read_text().replace("title:", "titel:"))
    assert main(["list"]) == 1
    assert "run `kb validate`" in _one_error_line(capsys.readouterr().err)


def test_new_scaffolds_both_files_and_refuses_to_overwrite(tmp_kb, capsys):
    assert main(["new", "my-method"]) == 0
    assert "created papers/my-method.yaml" in capsys.readouterr().err
    paper = tmp_kb / "papers" / "my-method.yaml"
    note = tmp_kb / "challenge" / "my-method.md"
    assert paper.is_file() and note.is_file()
    assert paper.read_text().startswith("# yaml-language-server: $schema=../schema/paper.schema.json\n")
    before = paper.read_text()
    assert main(["new", "my-method"]) == 2
    assert "already exists" in _one_error_line(capsys.readouterr().err)
    assert paper.read_text() == before
    # the scaffold parses, and validation points the contributor at the TODOs
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "tags.type[0]: 'TODO' is not a type value" in out


@pytest.mark.parametrize("bad", ["My_Method", "-x", "a--b", "x" * 41])
def test_new_rejects_bad_ids_and_writes_nothing(tmp_kb, capsys, bad):
    assert main(["new", bad]) == 2
    _one_error_line(capsys.readouterr().err)
    assert list((tmp_kb / "papers").iterdir()) == []
    assert list((tmp_kb / "challenge").iterdir()) == []


def test_new_refuses_an_unwritable_target_before_asking_arxiv(tmp_kb, capsys, monkeypatch):
    import kb.arxiv

    (tmp_kb / "challenge").rmdir()
    (tmp_kb / "challenge").write_text("not a directory")
    monkeypatch.setattr(
        kb.arxiv, "draft_from_arxiv", lambda _id: pytest.fail("asked arXiv before checking paths")
    )
    for argv in (["new", "my-method"], ["new", "my-method", "--arxiv", "2306.11695"]):
        assert main(argv) == 2
        assert "challenge is a file, not a directory" in _one_error_line(capsys.readouterr().err)
    assert list((tmp_kb / "papers").iterdir()) == []  # not even the record was written


def test_validate_json_output(one_paper, capsys):
    path = one_paper / "papers" / "demo-method.yaml"
    path.write_text(path.read_text().replace("criteria: [wanda]", "criteria: [wand]"))
    assert main(["validate", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert problems == [
        {
            "file": "papers/demo-method.yaml",
            "line": 28,
            "field": "tags.criteria[0]",
            "message": "'wand' is not a criteria value (did you mean 'wanda'?)",
        }
    ]


def test_schema_check_detects_staleness(tmp_kb, capsys):
    assert main(["schema", "--check"]) == 1
    assert main(["schema"]) == 0
    assert main(["schema", "--check"]) == 0


def test_every_command_is_documented_in_the_readme():
    from kb_cli.main import build_parser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"`kb {name}" in readme, f"README's command table lacks kb {name}"
        assert command.description or any(a.help for a in sub._choices_actions if a.dest == name), name
