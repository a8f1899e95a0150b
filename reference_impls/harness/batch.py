"""`kb reproduce --all`: every runnable paper (or those of one kind) in one process, or in a few.

One process loads the model once and shares, through a `Session`, the token data, the dense measurements,
the dense-model statistics and identical runs among the papers whose settings match (see `harness.session`).
A paper whose run fails is reported and the others go on: a claim that does not hold is a result, a run that
raised is a failure. `jobs > 1` splits the papers into that many worker processes (papers with the same data
settings stay in the same worker, so they still share), each with its share of the threads; on a 2-core
machine one process is usually fastest, since each worker repeats the model load and the dense baseline.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb import allocator
from kb.errors import KBError
from kb.results import Reproduction

from .. import registry
from .fingerprint import stamp
from .report import keep_history, write_report
from .runner import Log, paper_options, reproduce, stderr_log
from .session import Session, data_scope


@dataclass(frozen=True)
class PaperResult:
    paper: str
    seconds: float
    record: Reproduction | None = None
    error: str | None = None  # one line: why the run failed

    def to_row(self) -> dict[str, Any]:
        """Plain data for another process (a worker or a cluster job hands its result back this way)."""
        record = self.record.model_dump_json() if self.record else None
        return {"paper": self.paper, "seconds": self.seconds, "error": self.error, "record": record}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PaperResult:
        record = Reproduction.model_validate_json(row["record"]) if row["record"] else None
        return cls(row["paper"], row["seconds"], record=record, error=row["error"])

    @property
    def verdict(self) -> str:
        if self.record is None:
            return "FAILED"
        return self.record.claim.verdict


def select_papers(kind: str | None = None) -> list[str]:
    """Runnable papers (sorted), or those whose own method is of `kind`."""
    papers = sorted(registry.PAPERS)
    if kind is None:
        return papers
    chosen = [p for p in papers if registry.METHODS[registry.PAPERS[p].method].kind == kind]
    if not chosen:
        kinds = sorted({registry.METHODS[s.method].kind for s in registry.PAPERS.values()})
        raise KBError(f"no runnable paper of kind {kind!r}; kinds with papers: {', '.join(kinds)}")
    return chosen


def run_papers(
    papers: list[str],
    explicit: dict[str, Any],
    *,
    commit_dir: Path | None = None,
    log: Log = stderr_log,
    session: Session | None = None,
    on_result: Callable[[PaperResult], None] | None = None,
) -> list[PaperResult]:
    """Reproduce each paper in turn in this process; with `commit_dir`, write `<dir>/<paper>.json` as each
    finishes (an interrupted refresh keeps what it finished)."""
    session = session or Session()
    out: list[PaperResult] = []
    begin = time.perf_counter()
    for i, paper in enumerate(papers, 1):
        done = ", ".join(f"{r.paper} {r.verdict}" for r in out[-3:])
        log(f"kb: [{i}/{len(papers)}] {paper} ({time.perf_counter() - begin:.0f} s so far"
            + (f"; last: {done})" if done else ")"))  # fmt: skip
        start = time.perf_counter()
        try:
            record = reproduce(paper, paper_options(registry.paper_spec(paper), explicit), log, session)
        except KBError as exc:
            result = PaperResult(paper, time.perf_counter() - start, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - one paper's bug must not stop the others; it is reported
            result = PaperResult(paper, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
        else:
            result = PaperResult(paper, time.perf_counter() - start, record=record)
            if commit_dir is not None:
                log(f"kb: {paper}: fingerprinting the code that ran on a small random model")
                record = keep_history(stamp(record, commit_dir.parent), commit_dir / f"{paper}.json")
                result = PaperResult(paper, result.seconds, record=record)
                write_report(commit_dir / f"{paper}.json", record)
                log(f"kb: {paper}: written to {commit_dir / f'{paper}.json'}")
        if result.error:
            log(f"kb: {paper}: FAILED: {result.error}")
        allocator.release()  # the next paper's peak need not sit on this one's free blocks (see kb.allocator)
        out.append(result)
        if on_result is not None:
            on_result(result)
    return out


def split(papers: list[str], explicit: dict[str, Any], jobs: int) -> list[list[str]]:
    """At most `jobs` groups of papers, balanced by their number of runs; papers with the same data settings stay
    together unless there are fewer settings than workers."""
    by_scope: dict[Any, list[str]] = {}
    for paper in papers:
        by_scope.setdefault(data_scope(paper_options(registry.paper_spec(paper), explicit)), []).append(paper)
    cost = {p: 1 + len(registry.PAPERS[p].runs) for p in papers}
    units = sorted(by_scope.values(), key=lambda g: -sum(cost[p] for p in g))
    while len(units) < jobs and len(units[0]) > 1:  # fewer settings than workers: split the largest group
        big = units.pop(0)
        units += [big[: len(big) // 2], big[len(big) // 2 :]]
        units.sort(key=lambda g: -sum(cost[p] for p in g))
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(units))))]
    load = [0] * len(groups)
    for members in units:
        i = load.index(min(load))
        groups[i] += members
        load[i] += sum(cost[p] for p in members)
    return [sorted(g) for g in groups if g]


def _worker(papers: list[str], explicit: dict[str, Any], commit_dir: str | None) -> list[dict[str, Any]]:
    allocator.tune()  # a spawned worker starts with the C library's defaults
    results = run_papers(papers, explicit, commit_dir=Path(commit_dir) if commit_dir else None)
    return [r.to_row() for r in results]


def run_one(paper: str, explicit: dict[str, Any], commit_dir: str | None) -> dict[str, Any]:
    """One paper in a fresh process (a cluster job, `harness.launcher`): its result as a picklable row."""
    (row,) = _worker([paper], explicit, commit_dir)
    return row


def run_all(
    papers: list[str],
    explicit: dict[str, Any],
    *,
    jobs: int = 1,
    commit_dir: Path | None = None,
    log: Log = stderr_log,
) -> list[PaperResult]:
    """All `papers`, in this process (`jobs == 1`) or split over `jobs` worker processes; results in paper order."""
    if jobs <= 1:
        return run_papers(papers, explicit, commit_dir=commit_dir, log=log)
    groups = split(papers, explicit, jobs)
    threads = max(1, len(os.sched_getaffinity(0)) // len(groups))
    log(f"kb: {len(groups)} workers, {threads} thread(s) each: " + "; ".join(", ".join(g) for g in groups))
    worker_options = {**explicit, "threads": explicit.get("threads") or threads}
    found: dict[str, PaperResult] = {}
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_worker, g, worker_options, str(commit_dir) if commit_dir else None) for g in groups
        ]
        for group, future in zip(groups, futures, strict=True):
            try:
                rows = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died fails its papers, not the whole refresh
                for paper in group:
                    found[paper] = PaperResult(
                        paper, 0.0, error=f"worker failed: {type(exc).__name__}: {exc}"
                    )
                continue
            for row in rows:
                found[row["paper"]] = PaperResult.from_row(row)
    return [found[p] for p in papers]


def summary(results: list[PaperResult], wall_seconds: float | None = None) -> str:
    """One row per paper: verdict, seconds, and the reason (or the error)."""
    rows = [("paper", "claim", "time", "detail")]
    for r in results:
        detail = r.error or (r.record.claim.reason if r.record else "")
        rows.append((r.paper, r.verdict, f"{r.seconds:.0f} s", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]]) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    failed = [r.paper for r in results if r.record is None]
    total = wall_seconds if wall_seconds is not None else sum(r.seconds for r in results)
    lines.append("")
    lines.append(f"{len(results)} papers in {total:.0f} s; "
                 + (f"failed: {', '.join(failed)}" if failed else "every run completed"))  # fmt: skip
    return "\n".join(lines)
