"""The documentation says what the code does where it can be checked without a service."""

from __future__ import annotations

import re

from drledger.errors import exit_code_table
from tests.helpers import REPO


def test_the_exit_code_table_is_the_one_the_enum_generates() -> None:
    page = (REPO / "docs" / "exit-codes.md").read_text()
    shown = re.search(r"<!-- exit-codes:begin -->\n(.*?)<!-- exit-codes:end -->", page, re.S)
    assert shown is not None, "docs/exit-codes.md lost its exit-codes markers"
    assert shown.group(1) == exit_code_table(), (
        "regenerate the table: python -c 'from drledger.errors import exit_code_table; print(exit_code_table())'"
    )
