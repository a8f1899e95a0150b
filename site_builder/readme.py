"""The generated section of README.md, between two marker comments.

Only the text between `BEGIN` and `END` is ours; everything around it is hand-written and kept
byte for byte. When the markers are missing they are appended at the end of the README.
"""

from __future__ import annotations

from kb.errors import KBError

BEGIN = "<!-- BEGIN GENERATED: papers -->"
END = "<!-- END GENERATED: papers -->"


def splice(readme: str, section: str) -> str:
    """`readme` with the text between the markers replaced by `section`."""
    begins, ends = readme.count(BEGIN), readme.count(END)
    if begins == 0 and ends == 0:
        head = readme.rstrip("\n")
        return (head + "\n\n" if head else "") + f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if begins != 1 or ends != 1:
        raise KBError(f"README.md must contain exactly one {BEGIN} and one {END} line", code=1)
    start = readme.index(BEGIN)
    stop = readme.index(END)
    if stop < start:
        raise KBError(f"README.md: {END} comes before {BEGIN}", code=1)
    return readme[:start] + f"{BEGIN}\n{section.rstrip()}\n" + readme[stop:]
