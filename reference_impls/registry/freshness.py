"""Are the committed results still those of today's code? (`kb build --check`, and so CI.)

Each committed result (`reproductions/<paper>.json`, `reproductions/sweeps/<name>.json`) carries the content hash
of the files it ran (`kb.codehash`); this module recomputes it from the checkout and names every result whose
code changed since, or that carries no hash at all, with the command that refreshes it. Torch-free: it reads the
registry, never the harness.

A moved code hash is forgiven when the behaviour did not move: `reproductions/fingerprints/today.json` records, per
result, the behavioural fingerprint of today's code (`reference_impls.harness.fingerprint`, written by
`kb fingerprint`) and the code hash it was taken at. When that hash is today's and the digest equals the one the
result carries, the result is fresh "by behaviour" and is counted in one summary line instead of being named.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from kb.codehash import changed_files
from kb.errors import KBError
from kb.results import CodeVersion, Fingerprint, Reproduction, Sweep

FINGERPRINTS = "reproductions/fingerprints/today.json"


def result_path(record: Reproduction | Sweep) -> str:
    """Where a committed result lives, relative to the checkout (the key of the fingerprint book)."""
    if isinstance(record, Sweep):
        return f"reproductions/sweeps/{record.name}.json"
    return f"reproductions/{record.paper}.json"


def load_fingerprints(root: Path) -> dict[str, Fingerprint]:
    """Result path -> the fingerprint of today's code recorded by `kb fingerprint` (empty when none)."""
    path = root / FINGERPRINTS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = (
            "digest",
            "code_hash",
            "version",
        )  # each entry also keeps its payload (for `kb fingerprint`)
        return {
            k: Fingerprint.model_validate({f: v.get(f) for f in fields}) for k, v in data["results"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise KBError(
            f"{FINGERPRINTS} is not a valid fingerprint file ({first}); rewrite it with `kb fingerprint`"
        ) from None


def reproduce_command(rep: Reproduction) -> str:
    """The command that rewrites a committed reproduction with the options it was made with."""
    from . import PAPERS

    spec = PAPERS.get(rep.paper)
    has_extra = spec is not None and any(r.extra for r in spec.runs)
    extra = " --all-runs" if rep.config.get("all_runs") and has_extra else ""
    return f"kb reproduce {rep.paper} --model {rep.model}{extra} --commit"


def sweep_command(sweep: Sweep) -> str:
    flag = "--" + sweep.axis.replace("_", "-")
    values = ",".join(str(int(v)) if sweep.axis == "layers" else f"{v:g}" for v in sweep.values)
    probe = bool(sweep.config.get("probe"))
    extra = ""
    if probe != (sweep.axis == "layers"):
        extra += " --probe" if probe else " --no-probe"
    if sweep.config.get("speed"):
        extra += " --speed"
    methods = " ".join(sweep.methods)
    return f"kb sweep {methods} {flag} {values} --model {sweep.model} --name {sweep.name}{extra} --commit"


def _why(recorded: CodeVersion | None, current: CodeVersion) -> str | None:
    if recorded is None:
        return "it records no code hash (written before results carried one)"
    if recorded.hash == current.hash:
        return None
    changed = changed_files(recorded, current)
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"the code it ran changed since ({shown})" if changed else "its code hash does not match"


@dataclass
class Freshness:
    stale: list[str] = field(
        default_factory=list
    )  # one line per stale result, with the command refreshing it
    by_behaviour: list[str] = field(
        default_factory=list
    )  # results whose code moved but whose fingerprint did not


def _behaviour(
    record: Reproduction | Sweep, current: CodeVersion, book: dict[str, Fingerprint]
) -> str | None:
    """None when today's fingerprint equals the result's own; otherwise what to do about it."""
    today = book.get(result_path(record))
    if today is None or today.code_hash != current.hash:
        return "its behaviour is not fingerprinted at today's code (`kb fingerprint` says in seconds whether it moved)"
    if record.fingerprint is None or record.fingerprint.version != today.version:
        return "it carries no fingerprint to compare with"
    if record.fingerprint.digest != today.digest:
        return "its behaviour changed too (the fingerprint moved)"
    return None


def judge_results(
    root: Path, reps: dict[str, Reproduction], sweeps: dict[str, Sweep], expected: Iterable[str] = ()
) -> Freshness:
    """Every committed result against the code under `root`: stale ones named, fresh-by-behaviour ones listed.
    `expected`: the papers that must have a result (records whose `implementation:` is runnable); each one
    without a committed result is named as missing."""
    from . import METHODS, PAPERS, paper_code, sweep_code

    out = Freshness()
    book = load_fingerprints(root)

    def judge(record: Reproduction | Sweep, current: CodeVersion, command: str) -> None:
        where = result_path(record)
        why = _why(record.code, current)
        if why is None:
            return
        if record.code is not None:
            moved = _behaviour(record, current, book)
            if moved is None:
                out.by_behaviour.append(where)
                return
            why = f"{why} and {moved}"
        out.stale.append(f"{where}: stale: {why}; run `{command}`")

    for paper in sorted((set(expected) & set(PAPERS)) - set(reps)):
        out.stale.append(f"reproductions/{paper}.json: missing: {paper} is runnable but has no committed result; "
                         f"run `kb reproduce {paper} --model tiny-llama --commit`")  # fmt: skip
    for paper, rep in sorted(reps.items()):
        if paper not in PAPERS:
            out.stale.append(
                f"{result_path(rep)}: stale: {paper} has no runnable implementation any more; delete the file"
            )
            continue
        judge(rep, paper_code(paper, root), reproduce_command(rep))
    for _name, sweep in sorted(sweeps.items()):
        unknown = [m for m in sweep.methods if m not in METHODS]
        if unknown:
            out.stale.append(
                f"{result_path(sweep)}: stale: method {unknown[0]} is no longer registered; delete the file"
            )
            continue
        judge(sweep, sweep_code(sweep.methods, root), sweep_command(sweep))
    return out


def stale_results(root: Path, reps: dict[str, Reproduction], sweeps: dict[str, Sweep]) -> list[str]:
    """One line per committed result that is stale against the code under `root`; empty when all are fresh."""
    return judge_results(root, reps, sweeps).stale


def behaviour_line(fresh: Freshness) -> str | None:
    """The one line `kb build --check` prints for results kept fresh by their fingerprints."""
    n = len(fresh.by_behaviour)
    if not n:
        return None
    return (
        f"kb: {n} result{'s' if n != 1 else ''} ran older code whose behaviour is unchanged (fingerprints match "
        f"at today's code hash): kept"
    )
