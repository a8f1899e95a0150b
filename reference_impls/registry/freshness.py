"""Are the committed results still those of today's code? (`kb build --check`, and so CI.)

Each committed result (`reproductions/<paper>.json`, `reproductions/sweeps/<name>.json`) carries the content hash
of the files it ran (`kb.codehash`); this module recomputes it from the checkout and names every result whose
code changed since, or that carries no hash at all, with the command that refreshes it. Torch-free: it reads the
registry, never the harness.
"""

from __future__ import annotations

from pathlib import Path

from kb.codehash import changed_files
from kb.results import CodeVersion, Reproduction, Sweep


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


def stale_results(root: Path, reps: dict[str, Reproduction], sweeps: dict[str, Sweep]) -> list[str]:
    """One line per committed result that is stale against the code under `root`; empty when all are fresh."""
    from . import METHODS, PAPERS, paper_code, sweep_code

    out = []
    for paper, rep in sorted(reps.items()):
        where = f"reproductions/{paper}.json"
        if paper not in PAPERS:
            out.append(f"{where}: stale: {paper} has no runnable implementation any more; delete the file")
            continue
        why = _why(rep.code, paper_code(paper, root))
        if why:
            out.append(f"{where}: stale: {why}; run `{reproduce_command(rep)}`")
    for name, sweep in sorted(sweeps.items()):
        where = f"reproductions/sweeps/{name}.json"
        unknown = [m for m in sweep.methods if m not in METHODS]
        if unknown:
            out.append(f"{where}: stale: method {unknown[0]} is no longer registered; delete the file")
            continue
        why = _why(sweep.code, sweep_code(sweep.methods, root))
        if why:
            out.append(f"{where}: stale: {why}; run `{sweep_command(sweep)}`")
    return out
