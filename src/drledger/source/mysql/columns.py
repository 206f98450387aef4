"""How each MySQL column type travels in a row image, and how it comes back. Pure: SQL text only.

The capture trigger writes a row image with JSON_OBJECT; most values go in as MySQL prints them (exact
decimals, dates and datetimes as text, ENUM and SET as their text). Three kinds need an encoding
JSON_OBJECT cannot give them on its own, and replay undoes it:

- binary strings (BINARY, VARBINARY, BLOBs): base64 (`TO_BASE64`, undone by `FROM_BASE64`);
- BIT: the number (`CAST(… AS UNSIGNED)`);
- TIMESTAMP: seconds since the epoch with their fraction (`UNIX_TIMESTAMP`), so the image does not
  depend on the inserting session's time zone; replay's session runs in UTC and `FROM_UNIXTIME`
  gives the same instant back.

JSON columns are embedded as JSON (MariaDB's JSON is LONGTEXT checked by `json_valid`; MySQL's is its
own type). Replay reads each value with `JSON_VALUE` (a JSON column with `JSON_EXTRACT`) and casts
it to the column's type where a cast exists, so a value that does not fit is caught, not rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INTEGER = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
_PLAIN = {"float", "double", "real", "year"}
_UNSUPPORTED = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "vector",
}


def quote(identifier: str) -> str:
    """A MySQL identifier in backticks, inner backticks doubled."""
    return "`" + identifier.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A string literal for SQL text drledger generates (trigger bodies), quotes and backslashes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def json_path(column: str) -> str:
    """The JSON path of a column's member in a row image: $."name" with quotes and backslashes escaped."""
    return "$." + '"' + column.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # information_schema DATA_TYPE, lower case
    column_type: str  # information_schema COLUMN_TYPE, e.g. "decimal(65,30) unsigned"
    is_json: bool = False
    generated: bool = False

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type.lower()

    def unsupported(self) -> str | None:
        return self.data_type if self.data_type in _UNSUPPORTED else None

    def encode(self, value: str) -> str:
        """The image's member for this column, over the SQL expression `value` (NEW.`c` in the trigger)."""
        if self.data_type in _BINARY:
            return f"TO_BASE64({value})"
        if self.data_type == "bit":
            return f"CAST({value} AS UNSIGNED)"
        if self.data_type == "timestamp":
            return f"UNIX_TIMESTAMP({value})"
        return value

    def decode(self, image: str) -> str:
        """The typed value back from the image (the SQL expression `image`), ready to insert."""
        path = literal(json_path(self.name))
        if self.is_json or self.data_type == "json":
            return f"NULLIF(JSON_EXTRACT({image}, {path}), 'null')"
        value = f"JSON_VALUE({image}, {path})"
        if self.data_type in _BINARY:
            return f"FROM_BASE64({value})"
        if self.data_type == "timestamp":
            return f"FROM_UNIXTIME({value})"
        cast = self.cast_type()
        return f"CAST({value} AS {cast})" if cast else value

    def cast_type(self) -> str | None:
        """The CAST target that checks a value fits this column's type, where MySQL has one."""
        if self.data_type in _INTEGER or self.data_type == "bit":
            return "UNSIGNED" if self.unsigned or self.data_type == "bit" else "SIGNED"
        if self.data_type == "decimal":
            found = re.search(r"decimal\((\d+),(\d+)\)", self.column_type.lower())
            return f"DECIMAL({found.group(1)},{found.group(2)})" if found else "DECIMAL(65,30)"
        if self.data_type == "date":
            return "DATE"
        if self.data_type in ("datetime", "time"):
            found = re.search(r"\((\d)\)", self.column_type)
            return f"{self.data_type.upper()}({found.group(1) if found else 0})"
        if self.data_type in _TEXT:
            return "CHAR CHARACTER SET utf8mb4"
        return None  # floats, YEAR: MySQL converts them on insert, in strict mode or not at all


def image_expression(columns: list[Column], row: str = "NEW") -> str:
    """JSON_OBJECT over every column of a row, as the capture trigger writes it."""
    members = ", ".join(f"{literal(c.name)}, {c.encode(f'{row}.{quote(c.name)}')}" for c in columns)
    return f"JSON_OBJECT({members})"


def key_expression(keys: list[Column], value_of: dict[str, str]) -> str:
    """The row key as text, over typed values (`value_of[column]`, an SQL expression each): the value
    itself for one column, a JSON object for a composite key. The trigger and replay share it."""
    if len(keys) == 1:
        return f"CAST({keys[0].encode(value_of[keys[0].name])} AS CHAR CHARACTER SET utf8mb4)"
    members = ", ".join(f"{literal(c.name)}, {c.encode(value_of[c.name])}" for c in keys)
    return f"JSON_OBJECT({members})"
