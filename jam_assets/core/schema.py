"""The table contract, read from `schema/<table>.json` (BigQuery JSON schema, `bq mk`-compatible).

Those files are the one source of truth for column names, order, types and modes; the
warehouses build their DDL from them and the tests hold the core's rows against them. The
repository's top-level `schema/` folder is the one copy: `jam_assets/schema` links to it, and a
built wheel carries the files as package data, read here with importlib.resources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

# In FORMAT.md's order, which is also the order of the asset graph.
TABLES: tuple[str, ...] = (
    "blocks",
    "validatorstatistics",
    "corestatistics",
    "servicestatistics",
    "workreports",
    "preimages",
    "assurances",
    "tickets",
    "workpackages",
    "services",
    "segments",
)
REJECTED = "rejected_lines"
ALL_TABLES: tuple[str, ...] = (*TABLES, REJECTED)
# Tables computed per UTC day from the minute files' tables (jam_assets/leaderboard/).
DAY_TABLES: tuple[str, ...] = ("leaderboard", "quality_report")
# The asset that stands for a minute file itself; every table is derived from it.
RAW_LOG = "raw_log"
# raw_log and every table: what one run of a minute file materializes.
MINUTE_FILE_ASSETS: tuple[str, ...] = (RAW_LOG, *ALL_TABLES)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # BigQuery type: STRING, INTEGER, TIMESTAMP
    mode: str  # REQUIRED or NULLABLE
    description: str

    @property
    def required(self) -> bool:
        return self.mode == "REQUIRED"


@cache
def columns(table: str) -> tuple[Column, ...]:
    if table not in ALL_TABLES and table not in DAY_TABLES:
        raise KeyError(f"unknown table {table!r}; known tables: {', '.join(ALL_TABLES + DAY_TABLES)}")
    fields = json.loads((resources.files("jam_assets") / "schema" / f"{table}.json").read_text())
    return tuple(Column(f["name"], f["type"], f.get("mode", "NULLABLE"), f.get("description", "")) for f in fields)


def column_names(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in columns(table))


DUCKDB_TYPES = {"STRING": "VARCHAR", "INTEGER": "BIGINT", "TIMESTAMP": "TIMESTAMP", "DATE": "DATE"}


def duckdb_read_json(table: str, files_sql: str, only: tuple[str, ...] | list[str] | None = None) -> str:
    """A DuckDB FROM item reading JSONL exports of `table` with the schema's types (never inferred)."""
    cols = [c for c in columns(table) if only is None or c.name in only]
    spec = ", ".join(f"'{c.name}': '{DUCKDB_TYPES[c.type]}'" for c in cols)
    return f"read_json({files_sql}, format = 'newline_delimited', columns = {{{spec}}})"
