"""Table names parsed and printed the way PostgreSQL does: pure, tested directly."""

from __future__ import annotations

import pytest

from drledger.errors import DrledgerError
from drledger.names import TableName, canonical, quote_ident


@pytest.mark.parametrize(
    ("typed", "schema", "name", "printed"),
    [
        ("orders", "public", "orders", "public.orders"),
        ("public.orders", "public", "orders", "public.orders"),
        ("Public.Orders", "public", "orders", "public.orders"),  # bare parts fold, as in SQL
        ('"Sales"."Order"', "Sales", "Order", '"Sales"."Order"'),
        ('public."my table"', "public", "my table", 'public."my table"'),
        ('public."we""ird"', "public", 'we"ird', 'public."we""ird"'),
        ('public."dot.ted"', "public", "dot.ted", 'public."dot.ted"'),
        ('"order"', "public", "order", 'public."order"'),  # a reserved word is quoted when printed
        ("public.name", "public", "name", "public.name"),  # an unreserved keyword is not
        ("s1.t$x", "s1", "t$x", 's1."t$x"'),
        ("ünï.cödé", "ünï", "cödé", '"ünï"."cödé"'),
        ("  public.orders  ", "public", "orders", "public.orders"),
    ],
)
def test_names_parse_and_print_as_postgresql_does(typed: str, schema: str, name: str, printed: str) -> None:
    table = TableName.parse(typed)
    assert (table.schema, table.name) == (schema, name)
    assert table.qualified == printed
    assert TableName.parse(table.qualified) == table  # the printed text names the same table


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "a.b.c",
        '"unclosed',
        'public.""',
        "public.my table",
        "1abc",
        "public.",
        ".orders",
        "a..b",
        'x."y"z',
    ],
)
def test_names_that_are_not_table_names_are_one_sentence(typed: str) -> None:
    with pytest.raises(DrledgerError) as raised:
        TableName.parse(typed)
    assert "\n" not in str(raised.value)


def test_the_63_byte_limit_is_refused_not_truncated() -> None:
    assert TableName.parse("public." + "a" * 63).name == "a" * 63
    with pytest.raises(DrledgerError, match="63-byte"):
        TableName.parse("public." + "a" * 64)
    with pytest.raises(DrledgerError, match="63-byte"):
        TableName.parse('public."' + "é" * 32 + '"')  # 64 bytes in UTF-8, 32 characters


def test_quote_ident_and_canonical() -> None:
    assert quote_ident("select") == '"select"' and quote_ident("_x9") == "_x9"
    assert canonical('"public"."orders"') == "public.orders"
