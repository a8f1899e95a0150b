"""The only place that parses YAML: safe, strict, and aware of line numbers.

`load_yaml(path)` returns the data plus a map from each value's path (a tuple of keys and list
indices) to its 1-based line, so that errors can name `file:line: field.path`.

Stricter than `yaml.safe_load`: duplicate keys, anchors/aliases (the "billion laughs" bomb),
non-standard tags (`!!python/...` and friends), non-UTF-8 bytes and oversized files are errors,
raised as `YamlError` with a line number; nothing here ever raises another exception type for bad
input. CRLF line endings and a UTF-8 byte-order mark are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 256 * 1024
MAX_DEPTH = 20

Path_ = tuple[str | int, ...]

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it (several times faster); same nodes and marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(Exception):
    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class Loaded:
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, loc: Path_) -> int:
        """The line of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def load_yaml(path: Path) -> Loaded:
    raw = Path(path).read_bytes()
    return parse_yaml(raw)


def parse_yaml(raw: bytes) -> Loaded:
    if len(raw) > MAX_BYTES:
        raise YamlError(f"file is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(f"not valid UTF-8 (byte {exc.start})", line) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if "\x00" in text:
        raise YamlError("contains a NUL character", text[: text.index("\x00")].count("\n") + 1)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:  # pragma: no cover - all parser errors are marked in practice
        raise YamlError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError("invalid YAML: nested too deeply") from None
    loaded = Loaded(data=None)
    if node is None:
        return loaded
    loaded.data = _Builder(loaded.lines).build(node, (), 0)
    return loaded


class _Builder:
    """Turns a composed node graph into plain Python data, recording lines."""

    def __init__(self, lines: dict[Path_, int]) -> None:
        self.lines = lines
        self.seen: set[int] = set()
        self.constructor = yaml.SafeLoader("")  # only for scalar resolution

    def build(self, node: yaml.Node, loc: Path_, depth: int) -> Any:
        line = node.start_mark.line + 1
        if id(node) in self.seen:
            raise YamlError("anchors and aliases are not allowed", line)
        self.seen.add(id(node))
        if depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels", line)
        if node.tag == _TIMESTAMP and isinstance(node, yaml.ScalarNode):
            self.lines[loc] = line
            return node.value  # dates stay strings: a record's fields are typed by the schema
        if node.tag not in _PLAIN_TAGS:
            raise YamlError(f"tag {node.tag!r} is not allowed", line)
        self.lines[loc] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlError("merge keys (<<) are not allowed", key_node.start_mark.line + 1)
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlError("mapping keys must be plain strings", key_node.start_mark.line + 1)
                key = self._scalar(key_node)
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
                sub = (*loc, key)
                out[key] = self.build(value_node, sub, depth + 1)
                self.lines[sub] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR:  # most values: skip the constructor machinery
            return node.value
        if node.tag not in _PLAIN_TAGS:
            raise YamlError(f"tag {node.tag!r} is not allowed", node.start_mark.line + 1)
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise YamlError(f"bad value: {exc}", node.start_mark.line + 1) from None
