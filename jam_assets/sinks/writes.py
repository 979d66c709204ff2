"""What a warehouse is handed, and what it reports back, for one run's minute files.

A run stages each selected table's rows as one JSONL file per minute file. The warehouse replaces
exactly those minute files' rows in each table, and reports per table what it did; the exports are
published only for the tables the warehouse holds (jam_assets/defs/io_managers.py), so the JSONL
exports, the warehouse and Dune never disagree about a minute for long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# table -> minute_file -> its staged JSONL file (empty when the minute gave the table no rows)
Batches = Mapping[str, Mapping[str, Path]]


@dataclass
class TableWrite:
    """One table's write of a run: rows now stored for the run's minute files, and how long it took."""

    table: str
    rows: int
    seconds: float
    table_rows: int | None = None  # the whole table's rows after the write, when the warehouse says
    metadata: dict[str, object] = field(default_factory=dict)


class SchemaDrift(RuntimeError):
    """A warehouse table that differs from schema/<table>.json in a way that cannot be evolved in place."""


class WarehouseWriteError(RuntimeError):
    """A table whose rows the warehouse could not replace; the message says which and why.

    `transient`: a later attempt may succeed (the warehouse was busy or unreachable), as opposed to
    a table whose schema drifted or a statement over its byte limit, which no retry fixes.
    """

    def __init__(self, table: str, message: str, transient: bool = False):
        super().__init__(message)
        self.table = table
        self.transient = transient
