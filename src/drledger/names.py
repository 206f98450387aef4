"""Table names as PostgreSQL spells them: parsing what operators type, and one canonical text.

Every command, the outbox (`aggregatetype`), every ledger event and every report name a table by one
canonical text: each part as PostgreSQL's quote_ident prints it — bare when it is lower case, starts
with a letter or underscore and is not a keyword, otherwise in double quotes with inner quotes doubled
— joined by a dot: `public.orders`, `"Sales"."Order"`, `public."my table"`, `public."dot.ted"`. That
text is valid SQL and parses back to the same table, so a name read from a ledger is never mistaken
for another.

Parsing follows PostgreSQL: a bare part folds to lower case, a quoted part keeps its case, dots and
spaces; a name without a schema is in `public`. PostgreSQL silently truncates an identifier longer
than 63 bytes, which would name a different table, so such a name is refused instead.

SQL is never built from this text: the source database's engine quotes the parts itself, and its
catalog lookups compare the parts, never parse the text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from drledger.errors import DrledgerError

#: PostgreSQL's NAMEDATALEN - 1: the longest identifier, in bytes, it keeps whole.
MAX_IDENTIFIER_BYTES = 63
DEFAULT_SCHEMA = "public"

# The keywords quote_ident quotes (every category but "unreserved"), as pg_get_keywords() lists them
# in PostgreSQL 15. A keyword missing here only costs a name printed without quotes, never a wrong table.
_QUOTED_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean
    both case cast char character check coalesce collate collation column concurrently constraint create
    cross current_catalog current_date current_role current_schema current_time current_timestamp
    current_user dec decimal default deferrable desc distinct do else end except exists extract false
    fetch float for foreign freeze from full grant greatest group grouping having ilike in initially
    inner inout int integer intersect interval into is isnull join lateral leading least left like limit
    localtime localtimestamp national natural nchar none normalize not notnull null nullif numeric
    offset on only or order out outer overlaps overlay placing position precision primary real
    references returning right row select session_user setof similar smallint some substring symmetric
    table tablesample then time timestamp to trailing treat trim true union unique user using values
    varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement xmlexists
    xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
    """.split()  # noqa: SIM905 - a word list reads better than 150 quoted strings
)
_BARE_SAFE = re.compile(r"[a-z_][a-z0-9_]*")
# What PostgreSQL's scanner accepts as an unquoted identifier: a letter (any non-ASCII character
# counts as one) or underscore, then letters, digits, underscores and dollar signs.
_UNQUOTED = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")


def quote_ident(part: str) -> str:
    """One identifier as quote_ident prints it."""
    if _BARE_SAFE.fullmatch(part) and part not in _QUOTED_KEYWORDS:
        return part
    return '"' + part.replace('"', '""') + '"'


def _split(text: str) -> list[str]:
    """The dot-separated parts of a possibly quoted name, folded and unquoted as PostgreSQL does."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, chars = i + 1, []
            while True:
                end = text.find('"', j)
                if end < 0:
                    raise _not_a_name(text, "a quote is not closed")
                chars.append(text[j:end])
                if text.startswith('"', end + 1):  # a doubled quote is a quote
                    chars.append('"')
                    j = end + 2
                    continue
                i = end + 1
                break
            part = "".join(chars)
            if not part:
                raise _not_a_name(text, "a quoted part is empty")
        else:
            match = _UNQUOTED.match(text, i)
            if match is None:
                raise _not_a_name(text, "quote a part that holds spaces, dots or other signs")
            # PostgreSQL folds only ASCII letters of an unquoted identifier.
            part = match.group().translate(_ASCII_LOWER)
            i = match.end()
        parts.append(part)
        if i == n:
            return parts
        if text[i] != ".":
            raise _not_a_name(text, "quote a part that holds spaces, dots or other signs")
        i += 1


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _not_a_name(text: str, why: str) -> DrledgerError:
    return DrledgerError(
        f"{text!r} is not a table name ({why}); write it as schema.table, "
        'quoting parts as SQL does: public.orders, "Sales"."Order".'
    )


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table: the two parts exactly as the catalog stores them."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        """`table`, `schema.table` or their quoted SQL forms; raises DrledgerError in one sentence."""
        return _parse(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> TableName:
        stripped = text.strip()
        if not stripped:
            raise DrledgerError("An empty table name was given; write it as schema.table.")
        parts = _split(stripped)
        if len(parts) > 2:
            raise _not_a_name(text, "it has more than two parts")
        for part in parts:
            if len(part.encode()) > MAX_IDENTIFIER_BYTES:
                raise DrledgerError(
                    f"{quote_ident(part)[:40]}… is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte limit "
                    "for a name, so it cannot name a table (PostgreSQL would truncate it to another name)."
                )
        if len(parts) == 1:
            return cls(DEFAULT_SCHEMA, parts[0])
        return cls(parts[0], parts[1])

    @classmethod
    def is_valid(cls, text: str) -> bool:
        try:
            cls.parse(text)
        except DrledgerError:
            return False
        return True

    @functools.cached_property
    def qualified(self) -> str:
        """The canonical text: `public.orders`, `"Sales"."Order"`."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __str__(self) -> str:
        return self.qualified


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> TableName:
    # Ledgers name a handful of tables millions of times: each spelling is parsed once.
    return TableName._parse_uncached(text)


def canonical(text: str) -> str:
    """The canonical text of a name typed in any accepted spelling."""
    return TableName.parse(text).qualified
