"""The core package stands below the harness and the site builder: only the command line imports them."""

from __future__ import annotations

import ast
from pathlib import Path

KB = Path(__file__).resolve().parents[2] / "kb"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_neither_the_harness_nor_the_site_builder():
    core = [p for p in KB.rglob("*.py") if "commands" not in p.relative_to(KB).parts and p.name != "cli.py"]
    assert len(core) > 10
    offenders = {p.name: _imports(p) & {"reference_impls", "site_builder", "torch"} for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}
