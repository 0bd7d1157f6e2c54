"""Table and record schemas as data files; the single source for every table LinNét reads or writes.

Each table schema is a BigQuery table-schema JSON field list; `arrow_schema` derives the Parquet
(Arrow) schema from it, so no schema is written twice.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

_ARROW_TYPES = {
    "STRING": "string", "INTEGER": "int64", "INT64": "int64", "FLOAT": "float64",
    "FLOAT64": "float64", "BOOLEAN": "bool", "BOOL": "bool", "TIMESTAMP": "timestamp", "BYTES": "binary",
}


@functools.cache
def load(name: str) -> Any:
    """The parsed JSON schema `<name>.json` shipped in this package (e.g. "products").

    Read once per process (writers shape every row by it); the result is shared, so a caller that
    changes it works on a copy.
    """
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))


def field_names(name: str) -> list[str]:
    """Column names of table schema `name`, in order."""
    return [field["name"] for field in load(name)]


def arrow_schema(name: str):
    """The pyarrow schema of table schema `name` (REPEATED → list, REQUIRED → not nullable).

    Raises:
        ValueError: a field type this mapping does not know.
    """
    import pyarrow as pa

    def arrow_type(field: dict) -> pa.DataType:
        kind = _ARROW_TYPES.get(field["type"].upper())
        if kind is None:
            raise ValueError(f"schema {name}: field {field['name']} has unsupported type {field['type']}")
        base = pa.timestamp("us", tz="UTC") if kind == "timestamp" else pa.type_for_alias(kind)
        return pa.list_(base) if field.get("mode") == "REPEATED" else base

    return pa.schema([
        pa.field(field["name"], arrow_type(field), nullable=field.get("mode") != "REQUIRED")
        for field in load(name)
    ])
