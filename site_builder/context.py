"""Pure functions from the knowledge base to plain template data: no I/O, no rendering.

Everything is sorted so the output is byte-for-byte stable; the only dates that appear are data
dates (when GitHub metadata was fetched), never the build time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kb.protocols import describe, ran_protocol
from kb.results import Figure, Sweep
from kb.schema import SCHEMA_VERSION, Paper
from kb.store import KnowledgeBase, Record, record_json
from kb.vocab import Axis, ChoiceQualifier, Vocabulary

from . import bibtex
from .badges import text_colour
from .board import board_row, decisive, plot_context, verdict
from .inputs import GithubMeta, Reproduction
from .keyfacts import (
    ORIGIN_LABELS,
    findings_by_theme,
    findings_context,
    form_values,
    list_context,
    measured_context,
    origin_context,
    result_run,
)
from .leaderboards import (
    MIN_METHODS,
    build_slices,
    index_groups,
    paper_slice_links,
    result_rows,
    results_csv,
)
from .plotdata import board_plots, paper_plots
from .text import markdown_html

T = TypeVar("T")
NOTE_KINDS = ("blog", "reviews", "summary", "discussion")
# Where the catalogue's own repository lives: `extra.repository` in mkdocs.yml, or `repo_url` when a
# deployment sets it (mkdocs-material then asks the GitHub API for star counts from visitors' browsers,
# so the project itself leaves it unset: the site makes no outside requests). No address is published
# until one is configured: the home page then names no repository rather than a guessed one.
# A venue's kind, as the status facet and the paper pages name it.
STATUS_LABELS = {
    "conference": "Conference",
    "journal": "Journal",
    "workshop": "Workshop",
    "preprint": "Preprint",
    "under-review": "Under review",
}
# The record's `scope`, as the open-challenges page groups the notes (in this order).
SCOPE_LABELS = {
    "weight-pruning": "Weight pruning",
    "structured-pruning": "Structured (width) pruning",
    "depth-pruning": "Depth (layer) pruning",
    "kv-cache": "Key-value cache",
    "system": "Systems and kernels",
    "quantization": "Quantisation",
    "analysis": "Analyses",
}
# Identifier -> (label, address pattern). Identifiers are validated by the schema, so they are
# safe to put into a URL as they are.
IDENTIFIER_LINKS = {
    "arxiv": ("arXiv", "https://arxiv.org/abs/{}"),
    "openreview": ("OpenReview", "https://openreview.net/forum?id={}"),
    "acl": ("ACL Anthology", "https://aclanthology.org/{}/"),
    "doi": ("DOI", "https://doi.org/{}"),
}
FRAMEWORK_LABELS = {
    "pytorch": "PyTorch",
    "jax": "JAX",
    "tensorflow": "TensorFlow",
    "cuda": "CUDA",
    "c++": "C++",
    "other": "Code",
}


def paper_order(p: Paper) -> tuple:
    """Newest venue year first, then newest first appearance, then title."""
    return (-p.venue.year, -p.year, p.title.lower(), p.id)


def venue_label(p: Paper) -> str:
    """Seed style, e.g. `ICLR'24`, `ICLR'24 Workshop`, `ACL'24 Findings`, `ICLR'25 (under review)`."""
    v = p.venue
    label = f"{v.name}'{v.year % 100:02d}"
    if v.kind == "workshop" and "workshop" not in v.name.lower():
        label += " Workshop"
    if v.track:
        label += f" {v.track}"
    if v.kind == "under-review":
        label += " (under review)"
    return label


def heading(p: Paper) -> str:
    """The page heading: the title, led by the short name when the title does not already start
    with it ("Wanda: A Simple and Effective ..."), so that searching a short name finds its page."""
    if p.short_name and not _squash(p.title).startswith(_squash(p.short_name)):
        return f"{p.short_name}: {p.title}"
    return p.title


def _squash(text: str) -> str:
    """Letters and digits only, lower case: "Sheared-LLaMA" and "Sheared LLaMA" compare equal."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def repository_url(mkdocs_config: dict[str, Any] | None) -> str | None:
    """The catalogue's repository from mkdocs.yml (`repo_url`, else `extra.repository`), http(s) only."""
    config = mkdocs_config or {}
    extra = config.get("extra")
    for candidate in (config.get("repo_url"), extra.get("repository") if isinstance(extra, dict) else None):
        if isinstance(candidate, str) and candidate.startswith(("https://", "http://")):
            return candidate
    return None


def short_count(n: int) -> str:
    """1234 -> 1.2k, 12345 -> 12k."""
    if n < 1000:
        return str(n)
    if n < 10_000:
        return f"{n / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    return f"{round(n / 1000)}k"


def axis_context(axis: Axis) -> dict[str, Any]:
    values = []
    for v in axis.values:
        quals = []
        for name, q in axis.qualifiers_for(v.id).items():
            quals.append(
                {
                    "name": name,
                    "kind": q.kind,
                    "description": q.description,
                    "choices": list(q.values) if isinstance(q, ChoiceQualifier) else [],
                    "units": [] if isinstance(q, ChoiceQualifier) else list(q.units),
                    "multiple": isinstance(q, ChoiceQualifier) and q.multiple,
                }
            )
        values.append(
            {
                "id": v.id,
                "label": v.label,
                "aliases": list(v.aliases),
                "definition": v.definition,
                "qualifiers": quals,
                "papers": [],
            }
        )
    return {
        "id": axis.axis,
        "label": axis.label,
        "question": axis.question,
        "intro": axis.intro,
        "colour": axis.colour.lower(),
        "fg": text_colour(axis.colour.lower()),
        "values": values,
    }


def _qualifier_text(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def tag_groups(p: Paper, vocab: Vocabulary) -> list[dict[str, Any]]:
    """The six axes in fixed order, each with the paper's values (label, qualifiers, note)."""
    groups = []
    for axis in vocab.ordered():
        values = []
        for entry in getattr(p.tags, axis.axis):
            known = axis.value(entry.value)
            quals = entry.qualifiers
            values.append(
                {
                    "id": entry.value,
                    "label": known.label if known else entry.value,
                    "qualifiers": [
                        {"name": k, "text": _qualifier_text(v)} for k, v in quals.items() if k != "note"
                    ],
                    "note": quals.get("note"),
                    "short": ", ".join(_qualifier_text(v) for k, v in quals.items() if k != "note"),
                }
            )
        groups.append({"axis": axis.axis, "label": axis.label, "values": values})
    return groups


def stars_context(p: Paper, meta: GithubMeta | None) -> dict[str, Any] | None:
    if not p.repo or meta is None:
        return None
    found = meta.repos.get(p.repo) or next(
        (m for k, m in meta.repos.items() if k.lower() == p.repo.lower()), None
    )
    if found is None:
        return None
    return {
        "count": found.stars,
        "text": short_count(found.stars),
        "as_of": found.fetched_at.isoformat(),
        "archived": found.archived,
        "last_commit": found.last_commit.isoformat() if found.last_commit else None,
    }


def _fmt(x: float | None, digits: int) -> str:
    if x is None:
        return "–"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.{digits}f}"


def _budget(cache: Any) -> str:
    if cache is None:
        return "–"
    return "all" if cache.budget_tokens is None else str(cache.budget_tokens)


SAVABLE_KINDS = ("weight-sparsity", "allocation", "depth", "width")


def run_commands(paper: str, rep: Reproduction | None) -> list[str]:
    """The commands a reader copies to run the paper: its comparison, and `kb prune` when the committed
    result shows that the paper's own method changes weights (a KV-cache policy or a training stand-in
    leaves nothing to save)."""
    out = [f"kb reproduce {paper} --model tiny-llama"]
    run = result_run(rep) if rep is not None else None
    if run is not None and run.method and run.kind in SAVABLE_KINDS:
        out.append(f"kb prune {run.method} --model tiny-llama --save pruned-{run.method}")
    return out


def _vector(machine: Any) -> str:
    """`; AVX512 kernels, blas mkl` from what the result recorded about the machine's vector unit and BLAS."""
    parts = [f"{machine.torch_cpu} kernels" if machine.torch_cpu else "", machine.blas]
    return "".join(f"; {p}" for p in parts if p)


def shared_note(total: float | None, run_seconds: float) -> str | None:
    """Why a result's own wall time can be far below what its runs took: `kb reproduce --all` computes the
    dense baseline and runs shared by several papers once and reuses them, so a paper late in the batch may
    have spent almost nothing itself. None when the result's own time accounts for its runs."""
    if total is None or total >= 0.5 * run_seconds:
        return None
    return (
        f"this result came from kb reproduce --all, which reused runs computed for other papers: "
        f"{_fmt(total, 0)} s of its own"
    )


def reproduction_context(rep: Reproduction | None, paper: str | None = None) -> dict[str, Any] | None:
    if rep is None:
        return None
    machine = rep.machine
    runs = rep.runs
    run_seconds = sum(r.prune_seconds + r.eval_seconds for r in runs)
    rows = [
        {
            "label": r.label,
            "method": r.method or "–",
            "layers": r.metrics.size.layers,
            "params": f"{r.metrics.size.params_decoder / 1e6:.1f}M",
            "sparsity": f"{r.metrics.size.decoder_sparsity:.1%}",
            "ppl": _fmt(r.metrics.ppl, 2),
            "probe": _fmt(r.metrics.probe.acc_norm if r.metrics.probe else None, 3),
            "prefill": _fmt(r.metrics.speed.prefill_speedup if r.metrics.speed else None, 2),
            "decode": _fmt(r.metrics.speed.decode_speedup if r.metrics.speed else None, 2),
            "seconds": _fmt(r.prune_seconds, 1),
            "cache_ppl": _fmt(r.metrics.cache.ppl if r.metrics.cache else None, 2),
            "cache_budget": _budget(r.metrics.cache),
            "cache_mib": _fmt(r.metrics.cache.cache_bytes_end / 2**20 if r.metrics.cache else None, 1),
        }
        for r in runs
    ]
    return {
        "model": rep.model,
        "dataset": str(rep.dataset),
        "protocol": describe(ran_protocol(rep.dataset)),
        "rows": rows,
        "show": {
            "ppl": any(r.metrics.ppl is not None for r in runs),
            "probe": any(r.metrics.probe is not None for r in runs),
            "speed": any(r.metrics.speed is not None for r in runs),
            "cache": any(r.metrics.cache is not None for r in runs),
        },
        "claim": rep.claim.statement,
        "holds": rep.claim.holds,
        "verdict": verdict(rep.claim),
        "interval": decisive(rep.claim),
        "draws": rep.claim.draws,
        "history": [
            {"verdict": h.verdict, "produced": h.produced.isoformat() if h.produced else None}
            for h in rep.claim.history
        ],
        "reason": rep.claim.reason,
        "versions": [{"name": k, "version": v} for k, v in sorted(rep.versions.items())],
        "run_seconds": _fmt(run_seconds, 0),
        "shared_note": shared_note(rep.total_seconds, run_seconds),
        "produced": rep.produced.isoformat() if rep.produced else None,
        "machine": f"{machine.cpu or machine.system} ({machine.system}{_vector(machine)}), {machine.threads} threads "
        f"on {machine.device}"
        if machine
        else None,
        "code": f"{rep.code.hash[:19]}… over {len(rep.code.files)} files" if rep.code else None,
        "figures": [plot_context(p) for p in paper_plots(paper or rep.paper, rep)],
    }


def paper_context(
    rec: Record,
    kb: KnowledgeBase,
    meta: GithubMeta | None,
    reps: dict[str, Reproduction],
    titles: dict[str, str],
) -> dict[str, Any]:
    p = rec.paper
    assert kb.vocab is not None
    links = p.links
    notes = []
    if kb.challenges.get(p.id, "").strip():
        notes.append({"kind": "challenge", "label": "Challenge", "url": None})
    for kind in NOTE_KINDS:
        urls = getattr(links, kind)
        for i, u in enumerate(urls, 1):
            label = kind.capitalize() + (f" {i}" if len(urls) > 1 else "")
            notes.append({"kind": kind, "label": label, "url": u})
    code = [
        {
            "url": c.url,
            "label": FRAMEWORK_LABELS[c.framework],
            "official": c.official,
            "note": c.note,
            "framework": c.framework,
        }
        for c in links.code
    ]
    challenge = kb.challenges.get(p.id, "").strip()
    rep = reps.get(p.id)
    board = board_row(rep, rec.loaded.data, p.id)
    measured = measured_context(rep) if p.implementation else None
    if measured is not None:
        measured["quality"] = board["numbers"]  # the same arms and numbers as the board shows
    commands = run_commands(p.id, rep) if p.implementation else []
    return {
        "id": p.id,
        "title": p.title,
        "short_name": p.short_name,
        "name": p.short_name or p.title,
        "heading": heading(p),
        "authors": list(p.authors),
        "origin": origin_context(p),
        "year": p.year,
        "venue": {
            "name": p.venue.name,
            "year": p.venue.year,
            "kind": p.venue.kind,
            "track": p.venue.track,
            "label": venue_label(p),
            "status": STATUS_LABELS[p.venue.kind],
        },
        "earlier_versions": [
            {
                "title": e.title,
                "note": e.note,
                "venue": (
                    f"{e.venue.name} {e.venue.year} ({e.venue.kind}"
                    f"{', ' + e.venue.track if e.venue.track else ''})"
                )
                if e.venue
                else None,
            }
            for e in p.earlier_versions
        ],
        "scope": p.scope,
        "identifiers": [
            {"name": IDENTIFIER_LINKS[k][0], "value": v, "url": IDENTIFIER_LINKS[k][1].format(v)}
            for k, v in p.identifiers.model_dump(exclude_none=True).items()
        ],
        "paper_url": links.paper,
        "code": code,
        "notes": notes,
        "models": list(links.models),
        "repo": p.repo,
        "stars": stars_context(p, meta),
        "tags": tag_groups(p, kb.vocab),
        "form": form_values(p, kb.vocab.lists["form"]),
        "measured": measured,
        "takeaway": p.takeaway,
        "findings": findings_context(p, kb.vocab.lists["theme"], reps),
        "notes_html": markdown_html(p.notes) if p.notes else None,
        "challenge_html": markdown_html(challenge) if challenge else None,
        "related": [{"id": r, "title": titles.get(r, r)} for r in p.related],
        "related_by": [],  # filled in by `site_context`: the records that name this one in `related`
        "implementation": p.implementation,
        "reproduce": commands[0] if commands else None,
        "commands": commands,
        "module_url": None,  # filled in by `site_context` when the catalogue's repository is configured
        "reproduction": reproduction_context(rep, p.id) if p.implementation or p.id in reps else None,
        "board": board,
        "unverified": [{"field": k, "reason": v} for k, v in sorted(p.unverified.items())],
        "sources": [
            {"url": s.url, "locator": s.locator, "supports": list(s.supports), "numbers": list(s.numbers)}
            for s in p.sources
        ],
        "bibtex": bibtex.entry(p),
        "file": rec.file,
    }


def group_by(items: Iterable[T], keys: Callable[[T], Iterable[str]]) -> dict[str, list[T]]:
    """`items` listed under each of their keys, in their own order (an item appears once per key)."""
    out: dict[str, list[T]] = {}
    for item in items:
        for key in keys(item):
            out.setdefault(key, []).append(item)
    return out


def site_context(
    kb: KnowledgeBase,
    meta: GithubMeta | None = None,
    reps: dict[str, Reproduction] | None = None,
    mkdocs_config: dict[str, Any] | None = None,
    sweeps: dict[str, Sweep] | None = None,
) -> dict[str, Any]:
    """Everything the templates need, derived from validated records."""
    if kb.vocab is None:
        raise ValueError("the vocabulary did not load")
    reps = reps or {}
    plots = board_plots(reps, sweeps or {})
    figures: list[Figure] = [p.figure for p in plots]
    for paper, rep in sorted(reps.items()):
        figures += [p.figure for p in paper_plots(paper, rep)]
    keys = [f.key for f in figures]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two plots would share a file: {sorted(k for k in keys if keys.count(k) > 1)[0]}")
    records = sorted(kb.records, key=lambda r: paper_order(r.paper))
    titles = {r.paper.id: (r.paper.short_name or r.paper.title) for r in records}
    papers = [paper_context(r, kb, meta, reps, titles) for r in records]
    by_id = {p["id"]: p for p in papers}
    cite_keys = bibtex.unique_keys([r.paper for r in records])
    for r in records:  # the page's entry uses the same key as papers.bib, also when two papers collide
        if cite_keys[r.paper.id] != bibtex.cite_key(r.paper):
            by_id[r.paper.id]["bibtex"] = bibtex.entry(r.paper, cite_keys[r.paper.id])
    for p in papers:  # `related` is written on one side; show it on both
        for r in p["related"]:
            if r["id"] in by_id and p["id"] not in {x["id"] for x in by_id[r["id"]]["related"]}:
                by_id[r["id"]]["related_by"].append({"id": p["id"], "title": p["name"]})
    for p in papers:
        p["related_by"].sort(key=lambda r: (r["title"].lower(), r["id"]))
    rows = result_rows(kb)
    slices = build_slices(rows)
    own = group_by(rows, lambda r: [r.paper])
    touching = group_by(slices, lambda s: {k for r in s.rows for k in (r.paper, r.result.method)})
    for p in papers:  # each paper looks only at its own rows and slices: a scan of all is quadratic
        p["results"] = [r.context() for r in own.get(p["id"], [])]
        # a few slices, then "and N more" per model
        p["slices"] = paper_slice_links(touching.get(p["id"], []), p["id"])
    axes = [axis_context(a) for a in kb.vocab.ordered()]
    form = list_context(kb.vocab.lists["form"])
    themes = list_context(kb.vocab.lists["theme"])
    for value in form["values"]:
        value["papers"] = [
            {"id": p["id"], "name": p["name"], "venue": p["venue"]["label"]}
            for p in papers
            if any(f["id"] == value["id"] for f in p["form"])
        ]
    for axis in axes:
        for value in axis["values"]:
            value["papers"] = [
                {"id": p["id"], "name": p["name"], "venue": p["venue"]["label"]}
                for p in papers
                if any(
                    v["id"] == value["id"] for g in p["tags"] if g["axis"] == axis["id"] for v in g["values"]
                )
            ]
            value["query"] = f"{axis['id']}={value['id']}"  # the all-papers filter for this value
    years: dict[int, list[dict[str, Any]]] = {}
    for p in papers:
        years.setdefault(p["venue"]["year"], []).append(p)
    board = [p for p in papers if p["implementation"]]
    with_notes = [p for p in papers if p["challenge_html"]]
    scopes = dict(SCOPE_LABELS)  # a scope the labels do not know yet still gets its group
    scopes.update(
        {
            p["scope"]: p["scope"].replace("-", " ").capitalize()
            for p in with_notes
            if p["scope"] not in scopes
        }
    )
    groups = [
        {
            "id": scope,
            "label": label,
            "papers": sorted(
                (p for p in with_notes if p["scope"] == scope), key=lambda p: p["heading"].lower()
            ),
        }
        for scope, label in scopes.items()
    ]
    repo = repository_url(mkdocs_config)
    if repo:
        for p in papers:
            if p["implementation"]:
                p["module_url"] = f"{repo.rstrip('/')}/blob/main/{p['implementation']}"
    return {
        "axes": axes,
        "form": form,
        "themes": themes,
        "finding_groups": findings_by_theme(papers, themes),
        "papers": papers,
        "years": [{"year": y, "papers": ps} for y, ps in sorted(years.items(), reverse=True)],
        "board": sorted(board, key=lambda p: p["name"].lower()),
        "challenges": sorted(with_notes, key=lambda p: p["name"].lower()),
        "challenge_groups": [g for g in groups if g["papers"]],
        "has_stars": any(p["stars"] for p in papers),
        "meta_fetched": meta.fetched.isoformat() if meta else None,
        "schema_version": SCHEMA_VERSION,
        "repository": repo,
        "citation": catalogue_citation(repo, len(papers)),
        "leaderboards": [s.context() for s in slices],
        "leaderboard_groups": index_groups(slices),
        "results_count": len(rows),
        "leaderboard_min": MIN_METHODS,
        "results_csv": results_csv(rows),
        "plots": [plot_context(p) for p in plots],
        "svg_figures": figures,  # every figure drawn as plots/<key>.svg (board and paper figures)
    }


def catalogue_citation(repo: str | None, count: int) -> str:
    """A BibTeX entry for the catalogue itself (each paper's own entry is on its page)."""
    return (
        "@misc{pruning-kb,\n"
        "  title        = {pruning-kb: a validated knowledge base of large-language-model pruning papers},\n"
        "  author       = {{pruning-kb contributors}},\n"
        + (f"  howpublished = {{\\url{{{repo}}}}},\n" if repo else "")
        + f"  note         = {{A catalogue of {count} papers with tags, take-aways and open challenges}}\n"
        "}\n"
    )


def choice_qualifiers(axis: dict[str, Any]) -> list[dict[str, Any]]:
    """An axis's choice qualifiers (e.g. `granularity` of type `structured`), merged by name over
    the values that allow them: what the filter offers as extra facets. Amount qualifiers (sizes)
    are free text and are searched, not faceted."""
    merged: dict[str, dict[str, Any]] = {}
    for v in axis["values"]:
        for q in v["qualifiers"]:
            if q["kind"] != "choice":
                continue
            m = merged.setdefault(
                q["name"],
                {"name": q["name"], "label": choice_label(q["name"]), "values": [], "of": [], "labels": {}},
            )
            m["of"].append(v["id"])
            m["values"] += [c for c in q["choices"] if c not in m["values"]]
            m["labels"].update({c: choice_label(c) for c in q["choices"]})
    return list(merged.values())


# Words a qualifier id spells in lower case that readers know in another case.
_CHOICE_WORDS = {"lora": "LoRA", "kv": "KV", "mlp": "MLP", "ffn": "FFN", "qat": "QAT", "llm": "LLM"}


def choice_label(choice_id: str) -> str:
    """A qualifier choice as readers write it: `kv-cache` -> "KV cache", `lora` -> "LoRA",
    `continued-pretraining` -> "Continued pretraining"."""
    words = [_CHOICE_WORDS.get(w, w) for w in choice_id.replace("_", "-").split("-") if w]
    if not words:
        return choice_id
    first = words[0]
    words[0] = first if first in _CHOICE_WORDS.values() else first[:1].upper() + first[1:]
    return " ".join(words)


def papers_json(kb: KnowledgeBase, ctx: dict[str, Any]) -> dict[str, Any]:
    """The `papers.json` export: every record (as `kb show --json` prints it) plus what the site's
    filter needs: the page address, heading, venue label and status, stars, papers that name this one
    as related, and the vocabulary's labels, colours and choice qualifiers."""
    by_id = {p["id"]: p for p in ctx["papers"]}
    items = []
    for rec in sorted(kb.records, key=lambda r: r.paper.id):
        data = record_json(rec)
        page = by_id[rec.paper.id]
        data["site"] = {
            "page": f"papers/{rec.paper.id}/",
            "heading": page["heading"],
            "venue_label": page["venue"]["label"],
            "status": rec.paper.venue.kind,
            "stars": page["stars"]["count"] if page["stars"] else None,
            "stars_as_of": page["stars"]["as_of"] if page["stars"] else None,
            "related_by": [r["id"] for r in page["related_by"]],
        }
        items.append(data)
    return {
        "schema_version": ctx["schema_version"],
        "axes": [
            {
                "id": a["id"],
                "label": a["label"],
                "colour": a["colour"],
                "values": [{"id": v["id"], "label": v["label"]} for v in a["values"]],
                "qualifiers": choice_qualifiers(a),
            }
            for a in ctx["axes"]
        ],
        "statuses": [{"id": k, "label": v} for k, v in STATUS_LABELS.items()],
        "forms": [{"id": v["id"], "label": v["label"]} for v in ctx["form"]["values"]],
        "origins": [{"id": k, "label": v} for k, v in ORIGIN_LABELS.items()],
        "papers": items,
    }
