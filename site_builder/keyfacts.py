"""Template data for what a deployer reads first: the deployable form (with the measured size and CPU
speed of our own run, where the project can run the paper), the authors' origin and the key findings,
grouped by theme across papers for the findings page. Pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

from kb import provenance as prov
from kb.closedlists import ClosedList
from kb.results import Reproduction, RunResult
from kb.schema import Paper

from .badges import text_colour
from .board import decisive, verdict
from .leaderboards import result_anchor
from .text import inline

ORIGIN_LABELS = {
    "industry": "Industry",
    "academia": "Academia",
    "mixed": "Industry and academia",
    "unknown": "Unknown (authors not named)",
}


def list_context(closed: ClosedList) -> dict[str, Any]:
    """A closed list (form or theme) with its values in order, ready for badges, CSS and legends."""
    return {
        "id": closed.name,
        "label": closed.label,
        "question": closed.question,
        "intro": closed.intro,
        "colour": closed.colour.lower(),
        "fg": text_colour(closed.colour.lower()),
        "values": [
            {
                "id": v.id,
                "label": v.label,
                "definition": v.definition,
                "aliases": list(v.aliases),
                "colour": v.colour.lower(),
                "fg": text_colour(v.colour.lower()),
                "rank": i,
                "papers": [],
                "query": f"form={v.id}",
            }
            for i, v in enumerate(closed.values)
        ],
    }


def form_values(p: Paper, forms: ClosedList) -> list[dict[str, Any]]:
    """The record's forms, most deployable first (the list's order, not the record's)."""
    known = [f for f in dict.fromkeys(p.form) if forms.value(f) is not None]
    out = []
    for f in sorted(known, key=forms.rank):
        v = forms.value(f)
        assert v is not None
        out.append({"id": v.id, "label": v.label, "rank": forms.rank(f)})
    return out


def origin_context(p: Paper) -> dict[str, Any] | None:
    o = p.origin
    if o is None:
        return None
    return {
        "kind": o.kind,
        "label": ORIGIN_LABELS[o.kind],
        "affiliations": list(o.affiliations),
        "source": {"url": o.source.url, "locator": o.source.locator} if o.source else None,
    }


def result_run(rep: Reproduction) -> RunResult | None:
    """The run that stands for the paper's own method: labelled or run by the paper's id, else the first
    run named after it, else the first pruned run."""
    pruned = [r for r in rep.runs if r.kind != "dense"]
    for test in (
        lambda r: r.label == rep.paper,
        lambda r: r.method == rep.paper,
        lambda r: rep.paper in r.label,
    ):
        found = next((r for r in pruned if test(r)), None)
        if found is not None:
            return found
    return pruned[0] if pruned else None


def _ratio(x: float | None) -> str | None:
    return None if x is None or x != x else f"{x:.2f}x"


def measured_context(rep: Reproduction | None) -> dict[str, Any] | None:
    """What our own run found, in the order a reader needs it: the verdict on the paper's claim with the
    numbers it rests on and the quality of every arm, then the size and CPU speed of the paper's method
    beside the dense model it started from."""
    if rep is None:
        return None
    run = result_run(rep)
    dense = next((r for r in rep.runs if r.kind == "dense"), None)
    if run is None or dense is None:
        return None
    size, base = run.metrics.size, dense.metrics.size
    speed = run.metrics.speed
    cache = run.metrics.cache
    return {
        "label": run.label,
        "model": rep.model,
        "params": f"{size.params_total / 1e6:.1f}M",
        "params_dense": f"{base.params_total / 1e6:.1f}M",
        "bytes": f"{size.weight_bytes / 2**20:.0f} MiB",
        "bytes_dense": f"{base.weight_bytes / 2**20:.0f} MiB",
        "layers": size.layers,
        "layers_dense": base.layers,
        "sparsity": f"{size.decoder_sparsity:.0%}",
        "prefill": _ratio(speed.prefill_speedup) if speed else None,
        "decode": _ratio(speed.decode_speedup) if speed else None,
        "cache_decode": _ratio(cache.decode_speedup) if cache else None,
        "cache_mib": f"{cache.cache_bytes_end / 2**20:.1f} MiB" if cache else None,
        "holds": rep.claim.holds,
        "verdict": verdict(rep.claim),
        "interval": decisive(rep.claim),
        "draws": rep.claim.draws,
        "reason": rep.claim.reason,
        "quality": [],  # each arm's quality numbers: the board row's, filled in by `paper_context`
    }


def _claim_link(p: Paper, claim: str, key: str | None) -> dict[str, Any] | None:
    """Where the claim quotes its linked result: the text before and after the number, the number,
    and the row's anchor. The number is None when the claim does not quote it (`kb validate` says so);
    the page then links the row after the claim."""
    target = next((r for r in p.results if key is not None and r.key == key), None)
    if target is None or key is None:
        return None
    n = prov.quoted_value(claim, target.value)
    anchor = result_anchor(key)
    if n is None:
        return {"before": claim, "number": None, "after": "", "anchor": anchor}
    end = n.start + len(n.text)
    return {"before": claim[: n.start], "number": n.text, "after": claim[end:], "anchor": anchor}


# A paper page's served address relative to the page that links to it: "" (the page itself) or
# "../papers/<id>/" (from the findings page).
_PAGE = re.compile(r"^(?:\.\./)*(?:[a-z0-9-]+/)*$")
_NUMBER_TITLE = "the reported result this number comes from"


def _edge(text: str) -> str:
    """`inline(text)`, keeping one space where the text began or ended with space (`inline` trims)."""
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() else ""
    return f"{lead}{inline(text)}{trail}" if text.strip() else lead or trail


def claim_html(f: dict[str, Any], page: str = "") -> Markup:
    """A finding's claim as escaped HTML (the paper pages and the findings page are raw HTML), its
    linked number (if any) a link to the results row on the paper page served at `page`."""
    link = f.get("link")
    if not link:
        return Markup(inline(f["claim"]))
    if not _PAGE.match(page):
        raise ValueError(f"not a relative page address: {page!r}")
    href = f"{page}#{inline(link['anchor'])}"
    if link["number"] is None:
        return Markup(f'{inline(f["claim"])} (<a href="{href}">result</a>)')
    number = f'<a href="{href}" title="{_NUMBER_TITLE}">{inline(link["number"])}</a>'
    return Markup(f"{_edge(link['before'])}{number}{_edge(link['after'])}".strip())


def findings_context(p: Paper, themes: ClosedList, reps: dict[str, Reproduction]) -> list[dict[str, Any]]:
    out = []
    for i, f in enumerate(p.findings):
        theme = themes.value(f.theme) if f.theme else None
        rep = reps.get(f.tested_by) if f.tested_by else None
        out.append(
            {
                "n": i + 1,
                "claim": f.claim,
                "theme": theme.id if theme else None,
                "theme_label": theme.label if theme else None,
                "url": f.source.url,
                "locator": f.source.locator,
                "tested_by": f.tested_by,
                "result": f.result,
                "link": _claim_link(p, f.claim, f.result),
                "verdict": (
                    {
                        "holds": rep.claim.holds,
                        "word": verdict(rep.claim),
                        "claim": rep.claim.statement,
                        "model": rep.model,
                    }
                    if rep is not None
                    else None
                ),
            }
        )
    return out


def findings_by_theme(papers: list[dict[str, Any]], themes: dict[str, Any]) -> list[dict[str, Any]]:
    """Every finding under its theme (the list's order; findings without a theme last), papers side by
    side within a theme in the catalogue's order."""
    groups = [
        {"id": v["id"], "label": v["label"], "definition": v["definition"], "findings": []}
        for v in themes["values"]
    ]
    other = {"id": "other", "label": "Other findings", "definition": "", "findings": []}
    by_id = {g["id"]: g for g in groups}
    for p in papers:
        for f in p["findings"]:
            group = by_id.get(f["theme"] or "", other)
            group["findings"].append(
                {**f, "paper": p["id"], "paper_name": p["name"], "venue": p["venue"]["label"]}
            )
    return [g for g in [*groups, other] if g["findings"]]
