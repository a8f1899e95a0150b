"""Random mutations of a valid record never crash the validator: every outcome is a list of
one-line problems (or none)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kb.checks import check_all
from kb.store import load_kb

DATA = Path(__file__).parent / "data"
BASE_TEXT = (DATA / "base.yaml").read_text(encoding="utf-8")
BASE = yaml.safe_load(BASE_TEXT)
NOTE = (DATA / "base.md").read_text(encoding="utf-8")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["", "TODO", "javascript:x", "https://", "2:4", "~5B tokens", "Samll"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "delete":
                del parent[path[-1]]
            elif action == "add" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
            else:
                parent[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _check(root: Path, text: bytes) -> None:
    (root / "papers" / "demo-method.yaml").write_bytes(text)
    problems = check_all(load_kb(root))
    for p in problems:
        line = str(p)
        assert "\n" not in line.strip() or p.field == "yaml", line
        assert line.startswith(("papers/", "challenge/")), line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_structural_mutations_never_crash(tmp_kb: Path, data):
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    text = "# yaml-language-server: $schema=../schema/paper.schema.json\n" + json.dumps(data)
    _check(tmp_kb, text.encode("utf-8"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, len(BASE_TEXT)), cut=st.integers(0, 20), junk=st.binary(max_size=12))
def test_byte_level_mutations_never_crash(tmp_kb: Path, pos, cut, junk):
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    raw = BASE_TEXT.encode("utf-8")
    _check(tmp_kb, raw[:pos] + junk + raw[pos + cut :])
