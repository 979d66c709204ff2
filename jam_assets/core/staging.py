"""Rows on their way to the exports: per-table JSONL files in a staging folder, then an atomic rename.

The staging folder sits inside the export root, so publishing a file is one `os.replace` on the
same file system: a reader (or a run killed half-way) sees the old file or the new one, never a
partial one, and a re-materialized partition replaces its file instead of appending to it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import IO

from . import schema

_BUFFER = 1 << 20


class JsonlStage:
    """A RowSink writing each selected table's rows for one minute file to `<directory>/<table>.jsonl`.

    Rows of tables that are not selected are dropped, so a subset run writes only what it publishes.
    Every selected table gets a file, empty when the minute gave it no rows: publishing it replaces
    whatever an earlier materialization left.
    """

    def __init__(self, directory: Path, tables: Iterable[str] = schema.ALL_TABLES):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {t: open(directory / f"{t}.jsonl", "wb", buffering=_BUFFER) for t in tables}
        self._writes = {t: f.write for t, f in self._files.items()}

    def write(self, table: str, data: bytes) -> None:
        write = self._writes.get(table)
        if write is not None:
            write(data)

    def close(self) -> dict[str, Path]:
        for f in self._files.values():
            f.close()
        return {t: self.directory / f"{t}.jsonl" for t in self._files}

    def __enter__(self) -> JsonlStage:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files.values():
            f.close()


def export_path(export_dir: Path, table: str, key: str) -> Path:
    return export_dir / table / f"{key}.jsonl"


def publish(staged: Path, final: Path) -> None:
    """Move a staged file to its final place atomically (same file system, one rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class StagedTable:
    """One table's staged JSONL files for the minute files of a run: what the asset hands its IO manager."""

    def __init__(self, table: str, run: StagedRun | None = None):
        self.table = table
        self.run = run if run is not None else StagedRun({})
        self.run.tables.setdefault(table, self)
        self.files: dict[str, Path] = {}
        self.rows: dict[str, int] = {}

    def add(self, minute_file: str, path: Path, rows: int) -> None:
        self.files[minute_file] = path
        self.rows[minute_file] = rows

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def __repr__(self) -> str:
        return f"StagedTable({self.table!r}, {len(self.files)} minute files, {self.total_rows} rows)"


class StagedRun:
    """Every table staged by one step. The first table's output writes them all (side by side, so a run
    costs one warehouse round trip, not twelve); `outcome` keeps each table's result for its own output."""

    def __init__(self, tables: dict[str, StagedTable]):
        self.tables = tables
        self.outcome: dict[str, object] | None = None

    @classmethod
    def of(cls, tables: Iterable[str]) -> StagedRun:
        run = cls({})
        for t in tables:
            StagedTable(t, run)
        return run


def sweep_stale(staging_root: Path, older_than_seconds: float = 6 * 3600) -> int:
    """Remove the staging folders of runs that died without cleaning up (a SIGKILL, a lost machine)."""
    import time

    removed = 0
    cutoff = time.time() - older_than_seconds
    if not staging_root.is_dir():
        return 0
    for entry in staging_root.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def prune_exports(export_root: Path, tables: Iterable[str], before: date) -> tuple[int, int]:
    """Delete the export files of minutes on days before `before`, whole day folders at a time.

    Returns (files, bytes) removed. Only `<table>/YYYY/MM/DD` folders are looked at (year and month
    folders wholly before the cutoff are listed, nothing else), so the cost is a few directory
    listings per table, however much history is kept.
    """
    files = size = 0
    cutoff = before.strftime("%Y/%m/%d")
    for table in tables:
        base = export_root / table
        for year in _digit_dirs(base, 4):
            if year > cutoff[:4]:
                continue
            for month in _digit_dirs(base / year, 2):
                if f"{year}/{month}" > cutoff[:7]:
                    continue
                for day in _digit_dirs(base / year / month, 2):
                    if f"{year}/{month}/{day}" >= cutoff:
                        continue
                    folder = base / year / month / day
                    for entry in os.scandir(folder):
                        files += 1
                        size += entry.stat().st_size
                    shutil.rmtree(folder, ignore_errors=True)
                if not any((base / year / month).iterdir()):
                    (base / year / month).rmdir()
            if not any((base / year).iterdir()):
                (base / year).rmdir()
    return files, size


def _digit_dirs(path: Path, width: int) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and len(e.name) == width and e.name.isdigit())
    except FileNotFoundError:
        return []
