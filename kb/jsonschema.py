"""The JSON Schema editors use for papers/*.yaml: pydantic's schema with the vocabulary filled in.

Generated, committed at `schema/paper.schema.json`, and checked for staleness (`kb schema --check`).
"""

from __future__ import annotations

import json
from typing import Any

from .schema import Paper
from .vocab import AXES, Axis, ChoiceQualifier, Vocabulary

SCHEMA_PATH = "schema/paper.schema.json"


def build_schema(vocab: Vocabulary) -> dict[str, Any]:
    schema = Paper.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pruning-kb paper record"
    defs = schema.setdefault("$defs", {})
    tags = defs["Tags"]
    for name in AXES:
        axis = vocab[name]
        defs[f"Tag_{name}"] = _axis_schema(axis)
        tags["properties"][name] = {
            "description": f"{axis.label}: {axis.question}",
            "anyOf": [
                {"$ref": f"#/$defs/Tag_{name}"},
                {"type": "array", "minItems": 1, "items": {"$ref": f"#/$defs/Tag_{name}"}},
            ],
        }
    defs.pop("TagEntry", None)
    result = defs["PaperResult"]["properties"]
    for name, terms in (("dataset", vocab.datasets), ("metric", vocab.metrics)):
        result[name] = {
            "description": f"one of concepts/{name}s.yaml",
            "anyOf": [{"const": t.id, "description": f"{t.label}: {t.definition}"} for t in terms.values],
        }
    if "form" in vocab.lists:
        form = vocab.lists["form"]
        one = {"enum": [v.id for v in form.values]}
        schema["properties"]["form"] = {
            "description": f"{form.label}: {form.question} Most deployable first.",
            "anyOf": [one, {"type": "array", "maxItems": 7, "items": one}],
        }
    if "theme" in vocab.lists and "Finding" in defs:
        theme = vocab.lists["theme"]
        defs["Finding"]["properties"]["theme"] = {
            "description": f"{theme.label}: {theme.question}",
            "anyOf": [{"enum": [v.id for v in theme.values]}, {"type": "null"}],
        }
    return schema


def _axis_schema(axis: Axis) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    for v in axis.values:
        props: dict[str, Any] = {"value": {"const": v.id}, "note": {"type": "string", "maxLength": 80}}
        for key, q in axis.qualifiers_for(v.id).items():
            if isinstance(q, ChoiceQualifier):
                one = {"enum": q.values}
                props[key] = {
                    "description": q.description,
                    **({"anyOf": [one, {"type": "array", "items": one}]} if q.multiple else one),
                }
            else:
                props[key] = {
                    "description": q.description,
                    "type": "string",
                    "pattern": rf"^[~≈]?\s*\d+(\.\d+)?\s*[KMBT]?\+?\s+({'|'.join(q.units)})$",
                }
        options.append({"const": v.id, "description": v.definition})
        options.append(
            {
                "type": "object",
                "description": v.definition,
                "properties": props,
                "required": ["value"],
                "additionalProperties": False,
            }
        )
    return {"title": axis.label, "anyOf": options}


def render_schema(vocab: Vocabulary) -> str:
    return json.dumps(build_schema(vocab), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
