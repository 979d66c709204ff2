"""Dagster's SQLite event log, with batched writes of a range run's per-partition asset events.

A single-run backfill over a day of minute files records one materialization per minute file per
asset: 13 assets x 1,440 minute files = 18,720 events. Dagster hands them to the event log in
batches (`DAGSTER_EVENT_BATCH_SIZE`), but the stock `SqliteEventLogStorage` stores a batch one
event at a time, opening a new SQLAlchemy engine and two SQLite connections for each: about 11 ms
an event, three quarters of a day's backfill (bench/RESULTS.md). dagster-postgres writes a batch
with one INSERT; this class does the same for SQLite: one transaction in the run's shard, one in
the index shard, and the asset's latest-materialization row updated once per asset, not once per
event. Everything else, and every event that is not a plain materialization or observation batch,
goes through Dagster's own code unchanged.

Configured in dagster.yaml:

    event_log_storage:
      module: jam_assets.event_log_storage
      class: BatchedSqliteEventLogStorage

With no `base_dir` it uses `$DAGSTER_HOME/history/runs`, where the stock storage keeps the same
databases, so an instance can switch between the two and keep its history. (Dagster passes a
storage class its configuration only, not the instance's folder: hence DAGSTER_HOME, and
`instance_at` for code that opens an instance by its folder.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, Field, StringSource
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData

_BATCHED_KINDS = {
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
    # A range run's "planned" events, one per asset per minute file: stored per partition (so a
    # failed run marks each of its minute files failed in the UI), in one transaction.
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
}

BATCH_SIZE = "1000"


def batch_event_writes() -> None:
    """Have Dagster hand a range output's per-partition materializations to the storage in batches.

    Dagster reads DAGSTER_EVENT_BATCH_SIZE from the environment of the process that runs the step,
    each time it logs an event; an explicit setting wins.
    """
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", BATCH_SIZE)


def default_base_dir() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise DagsterInvariantViolationError(
            "jam_assets.event_log_storage needs DAGSTER_HOME (its databases live in $DAGSTER_HOME/history/runs); "
            "set it, or use `make dev` / `make run`, which set it to ./.dagster_home"
        )
    return os.path.join(home, "history", "runs")


@contextmanager
def instance_at(home: Path) -> Iterator[DagsterInstance]:
    """The Dagster instance kept in `home`, opened as a process with DAGSTER_HOME=home opens it."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose `store_event_batch` writes a batch in one transaction per shard."""

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        return cls(base_dir=config_value.get("base_dir") or default_base_dir(), inst_data=inst_data)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # A batch can mix kinds (a run's planned events: materializations, then asset checks): each
        # stretch of one batchable kind is written at once, the rest through Dagster's own code.
        for batchable, stretch in itertools.groupby(events, key=_batch_kind):
            stretch = list(stretch)
            if batchable is None or len(stretch) < 2:
                super().store_event_batch(stretch)
            else:
                self._store_asset_events(stretch)

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        rows = [self._event_to_row(e) for e in events]
        by_run: dict[str, list[dict[str, Any]]] = {}
        for event, row in zip(events, rows):
            by_run.setdefault(event.run_id, []).append(row)
        for run_id, run_rows in by_run.items():
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), run_rows)

        # Asset events are mirrored in the index shard, whose ids the asset tables refer to.
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True),
                rows,
            )
            event_ids = [row[0] for row in inserted]
            if len(event_ids) != len(events) or any(i is None for i in event_ids):
                raise DagsterInvariantViolationError("event batch insert returned no id for some events")
            self._store_asset_event_tags(conn, events, event_ids)
            latest: dict[str, tuple[EventLogEntry, int]] = {}
            for event, event_id in zip(events, event_ids):
                latest[event.dagster_event.asset_key.to_string()] = (event, event_id)
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)


def _batch_kind(event: EventLogEntry) -> DagsterEventType | None:
    """The event's kind when this storage writes it in batches, else None."""
    dagster_event = event.dagster_event
    if dagster_event is None or not dagster_event.asset_key or dagster_event.event_type not in _BATCHED_KINDS:
        return None
    return dagster_event.event_type
