#!/usr/bin/env python3
"""Build `data/readme-shingles.json`: salted hashes of the eight-word runs of every official README the
records cite, so that `tests/core/test_own_words.py` can tell when a take-away, note, finding or
challenge note copies one. No README text is written anywhere; only the hashes are kept.

Which READMEs: `kb.ownwords.cited_readmes` (each record's README sources at their commits, the folder
READMEs its official code links point into, and the top-level README of every other cited repository).
The word runs and their hashes come from `kb.ownwords` as well, the module the test uses.

Two ways to get the texts:

  online (default)   downloads https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path> with
                     httpx; a README cited at no commit is read at HEAD, and the commit HEAD stood at
                     is asked of the GitHub API and recorded (`"HEAD"` if that fails).
  --from-dir DIR     reads files already on disk, named `<owner>__<repo>@<commit>.md` for a top-level
                     README.md, or `<owner>__<repo>@<commit>~<path with / as ~>` for any other path
                     (`...@7bc55b0...~Readme.md`, `...@348a402...~Compresso~README.md`); `<commit>`
                     should be the full commit the text was read at. Every such file in DIR is used.

A folder README that does not exist (a code link into a folder without one) is replaced by the
repository's top-level README.md.

Each entry keeps the repository, the path, the commit the text was read at, the reference the records
cite (`cited`: a commit prefix, a branch, or null when they name none) and the hashes, concatenated
(16 hex digits each) and sorted. `--check` lists cited READMEs of repositories with no entry yet and
exits 1 if there are any (rerun the script to add them).

Usage:
    .venv/bin/python scripts/readme_shingles.py [--from-dir DIR] [--out data/readme-shingles.json]
    .venv/bin/python scripts/readme_shingles.py --check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kb.ownwords import (  # noqa: E402
    FINGERPRINTS,
    HASH_HEX,
    RUN,
    SALT,
    ReadmeRef,
    cited_readmes,
    load_fingerprints,
    text_hashes,
)
from kb.store import load_kb  # noqa: E402

RAW = "https://raw.githubusercontent.com/{repo}/{ref}/{path}"
API_COMMIT = "https://api.github.com/repos/{repo}/commits/{ref}"


def cited(root: Path) -> set[ReadmeRef]:
    kb = load_kb(root)
    return set().union(*(cited_readmes(r.paper) for r in kb.records)) if kb.records else set()


def parse_name(name: str) -> tuple[str, str, str] | None:
    """`(owner/repo, commit, path)` from a --from-dir file name, or None if it does not follow the scheme."""
    head, sep, rest = name.partition("~")
    if not sep:
        if not head.endswith(".md"):
            return None
        head, rest = head[: -len(".md")], "README.md"
    else:
        rest = rest.replace("~", "/")
    repo_part, at, commit = head.partition("@")
    owner, dunder, repo = repo_part.partition("__")
    if not (at and dunder and owner and repo and commit):
        return None
    return f"{owner}/{repo}", commit, rest


def file_name(repo: str, commit: str, path: str) -> str:
    """The --from-dir name of a README (the inverse of `parse_name`)."""
    owner, _, name = repo.partition("/")
    stem = f"{owner}__{name}@{commit}"
    return f"{stem}.md" if path == "README.md" else f"{stem}~{path.replace('/', '~')}"


def from_dir(directory: Path, refs: set[ReadmeRef]) -> list[dict[str, Any]]:
    entries = []
    for f in sorted(directory.iterdir()):
        parsed = parse_name(f.name) if f.is_file() else None
        if parsed is None:
            print(f"skipped (name not <owner>__<repo>@<commit>[~path]): {f.name}", file=sys.stderr)
            continue
        repo, commit, path = parsed
        same_repo = [r for r in refs if r.repo.lower() == repo.lower()]
        matches = [r for r in same_repo if r.path == path] or same_repo
        entries.append(
            entry(
                repo, path, commit, [r.ref for r in matches], f.read_text(encoding="utf-8", errors="replace")
            )
        )
    return entries


def online(refs: set[ReadmeRef]) -> list[dict[str, Any]]:
    import httpx

    from kb.http import user_agent

    entries = []
    with httpx.Client(
        headers={"User-Agent": user_agent("README fingerprints")}, timeout=30, follow_redirects=True
    ) as client:
        for r in sorted(refs, key=str):
            ref, path = r.ref or "HEAD", r.path
            resp = client.get(RAW.format(repo=r.repo, ref=ref, path=path))
            if resp.status_code == 404 and "/" in path:  # a folder without a README: the repository's
                path = "README.md"
                resp = client.get(RAW.format(repo=r.repo, ref=ref, path=path))
            if resp.status_code != 200:
                print(f"not found ({resp.status_code}): {r.repo} {ref} {path}", file=sys.stderr)
                continue
            commit = ref
            if r.ref is None:
                api = client.get(
                    API_COMMIT.format(repo=r.repo, ref="HEAD"),
                    headers={"Accept": "application/vnd.github.sha"},
                )
                commit = api.text.strip() if api.status_code == 200 else "HEAD"
            entries.append(entry(r.repo, path, commit, [r.ref], resp.text))
    return entries


def entry(repo: str, path: str, commit: str, cited_as: list[str | None], text: str) -> dict[str, Any]:
    hashes = sorted(text_hashes(text, SALT, RUN))
    return {
        "repo": repo,
        "path": path,
        "commit": commit,
        "cited": sorted({c for c in cited_as if c}) or None,
        "runs": len(hashes),
        "hashes": "".join(hashes),
    }


def write(out: Path, entries: list[dict[str, Any]]) -> None:
    doc = {
        "about": (
            "Salted hashes of the eight-word runs of the official READMEs the records cite; built by "
            "scripts/readme_shingles.py, read by tests/core/test_own_words.py. No README text is stored. "
            "hash = first hash_hex hex digits of sha256(salt + newline + the run's words joined by spaces), "
            "words as kb.ownwords.words reads them; each entry's hashes are concatenated, sorted."
        ),
        "salt": SALT,
        "run": RUN,
        "hash_hex": HASH_HEX,
        "readmes": sorted(entries, key=lambda e: (e["repo"].lower(), e["path"], e["commit"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def check(out: Path, refs: set[ReadmeRef]) -> int:
    have = load_fingerprints(out).repos() if out.is_file() else set()
    missing = sorted({f"{r.repo} {r.path} @ {r.ref or 'HEAD'}" for r in refs if r.repo.lower() not in have})
    for m in missing:
        print(f"no fingerprint: {m}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-dir", type=Path, help="read README files from DIR instead of downloading them")
    ap.add_argument("--out", type=Path, default=ROOT / FINGERPRINTS, help="fingerprint file to write")
    ap.add_argument(
        "--check", action="store_true", help="list cited READMEs without a fingerprint; exit 1 if any"
    )
    ap.add_argument(
        "--list", action="store_true", help="print the cited READMEs (as --from-dir names) and exit"
    )
    args = ap.parse_args(argv)
    refs = cited(ROOT)
    if args.list:
        for r in sorted(refs, key=str):
            print(file_name(r.repo, r.ref or "HEAD", r.path))
        return 0
    if args.check:
        return check(args.out, refs)
    entries = from_dir(args.from_dir, refs) if args.from_dir else online(refs)
    if not entries:
        print("no README read; nothing written", file=sys.stderr)
        return 1
    write(args.out, entries)
    print(f"{args.out}: {len(entries)} READMEs, {sum(e['runs'] for e in entries)} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
