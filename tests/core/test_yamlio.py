from __future__ import annotations

import pytest

from kb.yamlio import MAX_BYTES, YamlError, parse_yaml


def test_lines_are_recorded_for_nested_values():
    loaded = parse_yaml(b"a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert loaded.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert loaded.line_of(("b", 1, "c")) == 4
    assert loaded.line_of(("b", 0)) == 3
    assert loaded.line_of(("b", 7, "zzz")) == 2  # falls back to the nearest ancestor


@pytest.mark.parametrize(
    ("raw", "line", "message"),
    [
        (b"a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
        (b"a: &x [1, 2]\nb: *x\n", 1, "anchors and aliases are not allowed"),
        (b"a: !!python/object/apply:os.system [ls]\n", 1, "is not allowed"),
        (b"a: !custom 1\n", 1, "is not allowed"),
        (b"a: 1\nb: \xff\xfe\n", 2, "not valid UTF-8"),
        (b"a: [1, 2\n", 2, "invalid YAML"),
        (b"a: 1\n<<: {b: 2}\n", 2, "merge keys"),
        (b"a: 1\x00\n", 1, "NUL"),
        (b"? [1, 2]\n: x\n", 1, "mapping keys must be plain strings"),
    ],
)
def test_unsafe_or_broken_yaml_is_an_error_with_a_line(raw, line, message):
    with pytest.raises(YamlError) as info:
        parse_yaml(raw)
    assert message in info.value.message
    assert info.value.line == line


def test_billion_laughs_is_rejected_quickly():
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
        for i in range(9)
    )
    with pytest.raises(YamlError, match="aliases"):
        parse_yaml(bomb)


def test_oversized_and_deeply_nested_files_are_rejected():
    with pytest.raises(YamlError, match="limit"):
        parse_yaml(b"a: " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(YamlError, match="nested"):
        parse_yaml(b"a: " + b"[" * 60 + b"]" * 60 + b"\n")


def test_crlf_bom_and_dates_are_fine():
    loaded = parse_yaml("\ufeffa: 1\r\nwhen: 2024-05-01\r\nok: true\r\n".encode())
    assert loaded.data == {"a": 1, "when": "2024-05-01", "ok": True}
    assert loaded.line_of(("ok",)) == 3
