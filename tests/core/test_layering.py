"""The packages stand in layers, and a module imports only from its own layer or the ones below it:

    2  kb_cli            the command line: parses options, calls everything below
    1  reference_impls   the harness and the registry    |  site_builder  the website and README tables
    0  kb                the core: schema, records, results, hashes, paths, errors (no torch)

The two packages of layer 1 are siblings: neither imports the other (the command line passes the registry's
answers to the site builder). Every module of every layer is read with `ast`, and every import counts:
module-level, inside a function, under `if TYPE_CHECKING:`, relative ones (resolved), and `importlib.
import_module` / `__import__` calls whose module name starts with a literal. An import that goes up a layer
or sideways is an error unless it is listed in `ALLOWED` below with its reason, and the module must say why
in a comment on the import's line or the line above. At most two such exceptions may exist.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS = {"kb": 0, "reference_impls": 1, "site_builder": 1, "kb_cli": 2}

# Third-party libraries the core never imports: `kb validate`, `kb build` and `kb --help` stay torch-free.
CORE_FORBIDDEN = {"torch", "transformers"}

# (importing module's path, imported module) -> why the import goes against the layer order. None today.
ALLOWED: dict[tuple[str, str], str] = {}
MAX_ALLOWED = 2


@dataclass(frozen=True)
class Import:
    path: str  # relative to the checkout, with `/`
    line: int
    module: str  # absolute dotted name


def _package_of(rel: str) -> list[str]:
    """The dotted package a module at `rel` (a path relative to the checkout) resolves relative imports in."""
    parts = rel.removesuffix(".py").split("/")
    return parts[:-1]


def _literal_prefix(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def imports_in(source: str, rel: str) -> list[Import]:
    package = _package_of(rel)
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                assert len(base) == len(package) - (node.level - 1), f"{rel}:{node.lineno}: beyond the top"
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(rel, node.lineno, module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                prefix = _literal_prefix(node.args[0])
                if prefix and not prefix.startswith("."):
                    found.append(Import(rel, node.lineno, prefix))
    return found


def imports_of(path: Path) -> list[Import]:
    return imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def breaks_the_order(package: str, module: str) -> bool:
    """Whether `package` importing `module` goes up a layer or sideways to a sibling package."""
    top = module.split(".")[0]
    return top in LAYERS and top != package and LAYERS[top] >= LAYERS[package]


def _against_the_order() -> list[Import]:
    """Every import, anywhere in the layered packages, that breaks the order."""
    return [
        i for p in LAYERS for path in _modules(p) for i in imports_of(path) if breaks_the_order(p, i.module)
    ]


def test_every_top_level_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(LAYERS)
    for package in LAYERS:
        assert len(_modules(package)) > 1, package


def test_the_scanner_sees_every_kind_of_import():
    source = (
        "import os, kb_cli.main\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from site_builder.build import build\n"
        "def f():\n"
        "    from reference_impls import registry\n"
        "    from .. import errors\n"
        "    from .store import load_kb\n"
        "    importlib.import_module(f'kb_cli.commands.{name}')\n"
    )
    assert sorted(i.module for i in imports_in(source, "kb/sub/mod.py")) == [
        "kb",
        "kb.sub.store",
        "kb_cli.commands.",
        "kb_cli.main",
        "os",
        "reference_impls",
        "site_builder.build",
        "typing",
    ]
    assert [i.module for i in imports_in("from .paths import x\n", "kb/__init__.py")] == ["kb.paths"]


def test_the_order():
    assert not breaks_the_order("kb", "kb.paths")
    assert not breaks_the_order("reference_impls", "kb.codehash")
    assert not breaks_the_order("site_builder", "kb")
    assert not breaks_the_order("kb_cli", "reference_impls.harness.runner")
    assert not breaks_the_order("kb_cli", "site_builder.build")
    assert not breaks_the_order("kb", "kbx")  # another distribution, not a layer
    assert breaks_the_order("kb", "reference_impls")
    assert breaks_the_order("kb", "kb_cli.main")
    assert breaks_the_order("reference_impls", "site_builder.inputs")
    assert breaks_the_order("site_builder", "reference_impls.registry")
    assert breaks_the_order("site_builder", "kb_cli.commands.records")
    assert breaks_the_order("reference_impls", "kb_cli")


def test_no_import_goes_up_a_layer_or_sideways_unless_allowed():
    unexplained = [
        f"{i.path}:{i.line}: imports {i.module}"
        for i in _against_the_order()
        if (i.path, i.module) not in ALLOWED
    ]
    assert unexplained == []


def test_the_allowed_exceptions_are_few_current_and_explained_where_they_are():
    assert len(ALLOWED) <= MAX_ALLOWED
    found = [i for i in _against_the_order() if (i.path, i.module) in ALLOWED]
    for key, reason in ALLOWED.items():
        assert reason.strip(), key
        assert any((i.path, i.module) == key for i in found), (
            f"{key} is no longer imported: drop it from ALLOWED"
        )
    for i in found:
        lines = (ROOT / i.path).read_text(encoding="utf-8").splitlines()
        here, above = lines[i.line - 1], lines[i.line - 2] if i.line > 1 else ""
        assert "#" in here or above.strip().startswith("#"), f"{i.path}:{i.line}: say why at the import"


def test_the_core_imports_no_heavy_library():
    offenders = [
        f"{i.path}:{i.line}: imports {i.module}"
        for path in _modules("kb")
        for i in imports_of(path)
        if i.module.split(".")[0] in CORE_FORBIDDEN
    ]
    assert offenders == []
