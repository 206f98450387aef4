"""Fail if a relative link in README.md points at a file that does not exist.

The README lives outside `docs_dir`, so `mkdocs build --strict` never sees its links; this does.
Absolute URLs (https:, mailto:, …) and in-page anchors (#…) are not checked; a link's own anchor
(`docs/mysql.md#relay`) is ignored and only its file is checked. Links inside code blocks and code
spans are not links and are skipped.

    python scripts/check_readme_links.py [README.md …]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent

# [text](target "title") and ![alt](target); reference definitions: [label]: target
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code."""

    # Blank out code with spaces (keeping newlines) so line numbers stay right.
    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))

    prose = CODE_SPAN.sub(blank, FENCE.sub(blank, text))
    found = [(m.start(), m.group(1)) for m in INLINE.finditer(prose)]
    found += [(m.start(), m.group(1)) for m in REFERENCE.finditer(prose)]
    return sorted((prose.count("\n", 0, at) + 1, target) for at, target in found)


def broken(readme: Path) -> list[str]:
    problems = []
    for line, target in links(readme.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path:
            continue  # an absolute URL, or an anchor in this page
        path = (readme.parent / unquote(parts.path)).resolve()
        if not path.exists():
            problems.append(
                f"{readme.name}:{line}: the link '{target}' points at {path}, which does not exist"
            )
    return problems


def main(argv: list[str]) -> int:
    readmes = [Path(a) for a in argv] or [ROOT / "README.md"]
    problems = [p for readme in readmes for p in broken(readme)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_readme_links: {len(problems)} broken link(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
