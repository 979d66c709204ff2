"""Everything in this project that touches Dagster's internals (`dagster._...`), in one place.

Three things need them, all for speed on a day of minute files in one run (bench/RESULTS.md):

1. `BatchedSqliteEventLogStorage`, Dagster's SQLite event log with a range run's per-partition
   asset events (planned and materialized: 13 assets x 1,440 minute files = 18,720 of each for a
   day) written in one transaction per batch. The stock storage writes a batch one event at a time,
   with a new SQLAlchemy engine and two SQLite connections for each: about 11 ms an event.
   dagster-postgres already writes a batch with one INSERT. It also writes a range run's check
   evaluations (36 per minute file: 51,840 for a day), which Dagster hands over one at a time, in
   batches: it holds them until the run's next other event. `jam_assets.home` configures it in
   each Dagster home it prepares; a bare `dagster dev` (no DAGSTER_HOME) uses the stock storage.
2. `check_target`: the link from a check evaluation to the materialization it judged.
3. `add_partition_metadata`: per-minute-file output metadata for a whole range at once. The public
   `context.add_asset_metadata(..., partition_key=k)` re-reads the run's partition range from the
   instance and copies all metadata added so far on every call: quadratic over a day.

Each checks, when used, that the internals it relies on are there. If a Dagster upgrade moved them,
it logs one warning and takes the public path instead (the stock storage's own batch writes, or
`add_asset_metadata` per minute file): slower, never wrong. `jam_assets_tests/test_dagster_compat.py`
runs a range both ways and compares the materializations. An upgrade therefore needs: the test
suite at the new version (`make test-upgrade`), and a look at the warnings above in its output.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster import DagsterEventType, Field, StringSource
from sqlalchemy import bindparam

log = logging.getLogger("jam_assets")

try:  # the internals; if any moved, the public paths below are used
    from dagster._core.asset_graph_view.serializable_entity_subset import SerializableEntitySubset
    from dagster._core.events.log import EventLogEntry
    from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
        AssetCheckExecutionResolvedStatus,
    )
    from dagster._core.storage.asset_check_state import AssetCheckState, _process_run_statuses
    from dagster._core.storage.dagster_run import FINISHED_STATUSES
    from dagster._core.storage.event_log import SqliteEventLogStorage
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
    from dagster._serdes import ConfigurableClassData, serialize_value

    INTERNALS = True
except ImportError as missing:  # pragma: no cover (exercised by patching INTERNALS in the tests)
    INTERNALS = False
    _MISSING = str(missing)

_warned: set[str] = set()


def _warn_once(what: str, why: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(f"jam_assets: {what}: Dagster's internals changed ({why}); using the public path, which is slower")


# -- per-minute-file output metadata ---------------------------------------------------------------


def _accumulator_ok(step) -> bool:
    return (
        INTERNALS
        and hasattr(step, "_metadata_accumulator")
        and hasattr(step._metadata_accumulator, "per_output_metadata")
    )


def add_partition_metadata(
    context: dg.AssetExecutionContext, asset: str, by_partition: Mapping[str, Mapping[str, object]]
) -> None:
    """`context.add_asset_metadata(metadata, asset_key=asset, partition_key=k)` for many minute files at once."""
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    if step is None or not _accumulator_ok(step):
        _warn_once("per-partition metadata", "the step's metadata accumulator is not where it was")
        for key, metadata in by_partition.items():
            context.add_asset_metadata(dict(metadata), asset_key=asset, partition_key=key)
        return
    # These keys are the run's own, so the public method's check is moot: extend the accumulator once.
    merged = dict(step._metadata_accumulator.per_output_metadata)
    asset_key = dg.AssetKey(asset)
    for key, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)


# -- the event log ---------------------------------------------------------------------------------

BATCH_SIZE = "1000"
_BATCHED_KINDS = {
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
    # A range run's "planned" events, one per asset per minute file: stored per partition (so a
    # failed run marks each of its minute files failed in the UI), in one transaction.
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
}
_CHECK_BATCH = 5000
_PARTITIONS_TTL_SECONDS = 5.0
# What the check-state computation relies on (asset_check_state.py, sql_event_log.py).
_CHECK_STATE_OK = INTERNALS and all(
    hasattr(SqliteEventLogStorage, m)
    for m in ("get_asset_check_partition_info", "get_checkpointed_asset_check_state", "get_asset_check_state")
)
# The check-execution rows Dagster writes for a planned check (one per minute file) and updates for
# each evaluation (sql_event_log.py): the batched storage writes them itself if they have these columns.
_CHECK_ROWS_OK = INTERNALS and {
    "asset_key",
    "check_name",
    "partition",
    "run_id",
    "execution_status",
    "evaluation_event",
    "evaluation_event_timestamp",
    "evaluation_event_storage_id",
    "materialization_event_storage_id",
} <= set(AssetCheckExecutionsTable.c.keys())
_CHECK_METHODS = ("_event_to_row", "run_connection", "index_transaction", "_update_asset_check_evaluation")
_STORAGE_METHODS = (
    "_event_to_row",
    "run_connection",
    "index_transaction",
    "_store_asset_event_tags",
    "_store_asset_event",
)


def batch_event_writes() -> None:
    """Have Dagster hand a range output's per-partition events to the storage in batches.

    Dagster reads DAGSTER_EVENT_BATCH_SIZE (public) from the environment of the process that runs
    the step, each time it logs an event; an explicit setting wins. Called when the step starts.
    """
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", BATCH_SIZE)


if INTERNALS:

    class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
        """`SqliteEventLogStorage` whose `store_event_batch` writes a batch in one transaction per shard.

        Configured with the same `base_dir` as the stock storage (`<home>/history/runs`), so an
        instance can switch between the two and keep its history.
        """

        @classmethod
        def config_type(cls) -> Mapping[str, Any]:
            return {"base_dir": Field(StringSource)}

        @classmethod
        def from_config_value(  # type: ignore[override]
            cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
        ) -> BatchedSqliteEventLogStorage:
            return cls(base_dir=config_value["base_dir"], inst_data=inst_data)

        # A range run's check evaluations, held until the run's next other event (each step ends with
        # one) or `_CHECK_BATCH` of them: one transaction instead of three connections each.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._held: list[EventLogEntry] = []
            self._partitions: dict[str, tuple[float, set[str]]] = {}  # name -> (loaded at, keys)
            self._check_states: dict[Any, Any] = {}  # check key -> its AssetCheckState, this process's
            self._check_state_lock = threading.Lock()
            self._partitions_deleted = 0  # how often a reload found minute files gone

        def store_event(self, event: EventLogEntry) -> None:
            if _CHECK_ROWS_OK and _holdable(event) and all(hasattr(self, m) for m in _CHECK_METHODS):
                self._held.append(event)
                if len(self._held) >= _CHECK_BATCH:
                    self._store_held()
                return
            self._store_held()
            super().store_event(event)

        def dispose(self) -> None:
            self._store_held()
            super().dispose()

        def _store_held(self) -> None:
            held, self._held = self._held, []
            if not held:
                return
            by_run: dict[str, list[dict[str, Any]]] = {}
            rows = [self._event_to_row(e) for e in held]
            for event, row in zip(held, rows):
                by_run.setdefault(event.run_id, []).append(row)
            for run_id, run_rows in by_run.items():
                with self.run_connection(run_id) as conn:
                    conn.execute(SqlEventLogStorageTable.insert(), run_rows)
            with self.index_transaction() as conn:
                inserted = conn.execute(
                    SqlEventLogStorageTable.insert().returning(
                        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                event_ids = [row[0] for row in inserted]
                # Each evaluation updates the row its run's planned event wrote for its minute file,
                # as Dagster's `_update_asset_check_evaluation` does one statement at a time.
                params = [
                    _check_row_params(event, row, event_id) for event, row, event_id in zip(held, rows, event_ids)
                ]
                updated = conn.execute(_CHECK_ROW_UPDATE, params).rowcount
            if updated != len(held):  # a row was never planned (e.g. an external step): Dagster's own way
                for event, event_id in zip(held, event_ids):
                    self._update_asset_check_evaluation(event, event_id)

        # -- a partitioned check's state, as the UI asks for it (every asset page with checks) -------
        #
        # Dagster's own computation checks each partition record's key with one query and adds it to
        # the status subset by copying the subset: 12 s at 1,440 minute files, hours at 86,400.
        # Here, the keys are checked against one load of the partition keys (at most every few
        # seconds), each status subset is built once, and the state is kept per process and brought
        # up to date from the records after it (Dagster's checkpoint hook, which its SQL storages
        # leave empty).

        def _known_partitions(self, name: str, reload: bool = False) -> set[str]:
            cached = self._partitions.get(name)
            if reload or cached is None or time.monotonic() - cached[0] > _PARTITIONS_TTL_SECONDS:
                keys = set(self.get_dynamic_partitions(name))
                if cached is not None and not keys >= cached[1]:
                    # Minute files were deleted (retention): states holding them start over.
                    self._check_states.clear()
                    self._partitions_deleted += 1
                cached = (time.monotonic(), keys)
                self._partitions[name] = cached
            return cached[1]

        def get_checkpointed_asset_check_state(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
            return {key: self._check_states.get(key, AssetCheckState.empty()) for key in keys}

        def get_asset_check_state(self, keys: Sequence[Any]) -> Mapping[Any, Any]:
            if not _CHECK_STATE_OK:
                return super().get_asset_check_state(keys)
            with self._check_state_lock:
                for _ in range(2):  # again from the start if minute files were deleted meanwhile
                    deleted = self._partitions_deleted
                    for _, pdef in keys:  # a deletion among the keys drops the states kept so far
                        if isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name is not None:
                            self._known_partitions(pdef.name)
                    initial = {
                        key: state if state.compatible_with(pdef) else AssetCheckState.empty()
                        for (key, pdef), state in zip(
                            keys, self.get_checkpointed_asset_check_state([k for k, _ in keys]).values()
                        )
                    }
                    states = _updated_check_states(self, keys, initial)
                    if self._partitions_deleted == deleted:
                        self._check_states.update(states)
                        break
                return states

        def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
            """Dagster's, with the planned event serialized once, not once per minute file of the run
            (each copy holding the run's whole partition subset: quadratic over a range)."""
            dagster_event = event.dagster_event
            planned: Any = dagster_event.event_specific_data if dagster_event else None
            subset = getattr(planned, "partitions_subset", None)
            if dagster_event is None or subset is None or not _CHECK_ROWS_OK:
                return super()._store_asset_check_evaluation_planned(event, event_id)
            # Each row carries the event without the run's partition subset (its own minute file is
            # in `partition`; nothing reads the subset back from a row): rows of a day's range run
            # took 1.5 GB otherwise.
            own_row = type(planned)(asset_key=planned.asset_key, check_name=planned.check_name)
            serialized = serialize_value(
                event._replace(dagster_event=dagster_event._replace(event_specific_data=own_row))
            )
            timestamp = self._event_insert_timestamp(event)
            with self.index_connection() as conn:
                conn.execute(
                    AssetCheckExecutionsTable.insert(),
                    [
                        dict(
                            asset_key=planned.asset_key.to_string(),
                            check_name=planned.check_name,
                            partition=partition_key,
                            run_id=event.run_id,
                            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                            evaluation_event=serialized,
                            evaluation_event_timestamp=timestamp,
                            evaluation_event_storage_id=event_id,
                        )
                        for partition_key in subset.get_partition_keys()
                    ],
                )

        def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
            self._store_held()
            missing = [m for m in _STORAGE_METHODS if not hasattr(self, m)]
            if missing:
                _warn_once("batched event log", f"SqliteEventLogStorage has no {', '.join(missing)}")
                return super().store_event_batch(events)
            # A batch can mix kinds (a run's planned events: materializations, then asset checks):
            # each stretch of one batchable kind is written at once, the rest by Dagster's own code.
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
                    SqlEventLogStorageTable.insert().returning(
                        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                event_ids = [row[0] for row in inserted]
                if len(event_ids) != len(events) or any(i is None for i in event_ids):
                    raise dg.DagsterInvariantViolationError("event batch insert returned no id for some events")
                self._store_asset_event_tags(conn, events, event_ids)
                latest: dict[str, tuple[EventLogEntry, int]] = {}
                for event, event_id in zip(events, event_ids):
                    asset_key = event.dagster_event.asset_key if event.dagster_event else None
                    if asset_key is not None:  # every batched kind has one (_batch_kind)
                        latest[asset_key.to_string()] = (event, event_id)
                for event, event_id in latest.values():
                    self._store_asset_event(conn, event, event_id)

    _CHECK_ROW_UPDATE = (
        AssetCheckExecutionsTable.update()
        .where(
            AssetCheckExecutionsTable.c.asset_key == bindparam("w_asset_key"),
            AssetCheckExecutionsTable.c.check_name == bindparam("w_check_name"),
            AssetCheckExecutionsTable.c.run_id == bindparam("w_run_id"),
            AssetCheckExecutionsTable.c.partition == bindparam("w_partition"),
        )
        .values(
            execution_status=bindparam("v_status"),
            evaluation_event=bindparam("v_event"),
            evaluation_event_timestamp=bindparam("v_timestamp"),
            evaluation_event_storage_id=bindparam("v_event_id"),
            materialization_event_storage_id=bindparam("v_materialization_id"),
        )
    )

    def _check_row_params(event: EventLogEntry, row: Mapping[str, Any], event_id: int) -> dict[str, Any]:
        evaluation: Any = event.get_dagster_event().event_specific_data
        target = evaluation.target_materialization_data
        passed = (
            AssetCheckExecutionRecordStatus.SUCCEEDED if evaluation.passed else AssetCheckExecutionRecordStatus.FAILED
        )
        return {
            "w_asset_key": evaluation.asset_key.to_string(),
            "w_check_name": evaluation.check_name,
            "w_run_id": event.run_id,
            "w_partition": evaluation.partition,
            "v_status": passed.value,
            "v_event": row["event"],  # the event serialized once, as stored in the event log
            "v_timestamp": row["timestamp"],
            "v_event_id": event_id,
            "v_materialization_id": target.storage_id if target else None,
        }

    def _updated_check_states(
        storage: BatchedSqliteEventLogStorage, keys: Sequence[Any], initial: Mapping[Any, Any]
    ) -> dict[Any, Any]:
        """`asset_check_state.bulk_update_asset_check_state`, each partition taking the status of its
        latest record (as Dagster's from an empty state), in set operations per status."""
        after = min((state.latest_storage_id for state in initial.values()), default=0)
        infos = storage.get_asset_check_partition_info([k for k, _ in keys], after_storage_id=after)
        by_key: dict[Any, list[Any]] = {k: [] for k, _ in keys}
        run_ids = set().union(*(state.in_progress_runs.keys() for state in initial.values()))
        for info in infos:  # re-applying a record a state already holds changes nothing
            if info.check_key in by_key:
                by_key[info.check_key].append(info)
                if info.latest_execution_status == AssetCheckExecutionRecordStatus.PLANNED:
                    run_ids.add(info.latest_planned_run_id)
        finished = (
            {
                r.run_id: r.status
                for r in storage._instance.get_runs(
                    filters=dg.RunsFilter(run_ids=list(run_ids), statuses=list(FINISHED_STATUSES))
                )
            }
            if run_ids
            else {}
        )
        out = {}
        for key, pdef in keys:
            state, records = initial[key], by_key[key]
            if pdef is None or not isinstance(pdef, dg.DynamicPartitionsDefinition) or pdef.name is None:
                out[key] = state.with_updates(key, pdef, records, finished)  # Dagster's own way
                continue
            known, reloaded = storage._known_partitions(pdef.name), False
            touched: set[str] = set()
            into: dict[Any, set[str]] = {s: set() for s in AssetCheckExecutionResolvedStatus}
            runs: dict[str, set[str]] = {}
            for info in records:
                pk = info.partition_key
                if pk is not None and pk not in known and not reloaded:
                    # Registered since the keys were loaded? (Skipped now, it would never be seen again.)
                    known, reloaded = storage._known_partitions(pdef.name, reload=True), True
                if pk is None or pk not in known:
                    continue
                touched.add(pk)
                status = info.latest_execution_status
                if status == AssetCheckExecutionRecordStatus.PLANNED:
                    into[AssetCheckExecutionResolvedStatus.IN_PROGRESS].add(pk)
                    runs.setdefault(info.latest_planned_run_id, set()).add(pk)
                elif status in (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED):
                    if info.is_current:
                        passed = status == AssetCheckExecutionRecordStatus.SUCCEEDED
                        into[
                            AssetCheckExecutionResolvedStatus.SUCCEEDED
                            if passed
                            else AssetCheckExecutionResolvedStatus.FAILED
                        ].add(pk)

            def subset(keys_: set[str], key: Any = key, pdef: Any = pdef) -> Any:
                return SerializableEntitySubset(key=key, value=pdef.subset_with_partition_keys(keys_))

            gone = subset(touched)
            subsets = {
                status: state.subsets.get(status, SerializableEntitySubset.empty(key, pdef))
                .compute_difference(gone)
                .compute_union(subset(into[status]))
                for status in AssetCheckExecutionResolvedStatus
            }
            # A minute file belongs to the run of its latest record only (a later run's record moves it).
            in_progress = {run: prior.compute_difference(gone) for run, prior in state.in_progress_runs.items()}
            for run, pks in runs.items():
                in_progress[run] = in_progress.get(run, SerializableEntitySubset.empty(key, pdef)).compute_union(
                    subset(pks)
                )
            subsets, in_progress = _process_run_statuses(key, pdef, subsets, in_progress, finished)
            latest = max(
                (max(i.latest_check_event_storage_id, i.latest_materialization_storage_id or 0) for i in records),
                default=state.latest_storage_id,
            )
            out[key] = AssetCheckState(latest_storage_id=latest, subsets=subsets, in_progress_runs=in_progress)
        return out

    def _holdable(event: EventLogEntry) -> bool:
        """A check evaluation on a minute file, in a run: what BatchedSqliteEventLogStorage writes in batches."""
        dagster_event = event.dagster_event
        return (
            bool(event.run_id)
            and dagster_event is not None
            and dagster_event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            and getattr(dagster_event.event_specific_data, "partition", None) is not None
        )

    def _batch_kind(event: EventLogEntry) -> DagsterEventType | None:
        """The event's kind when this storage writes it in batches, else None."""
        dagster_event = event.dagster_event
        if dagster_event is None or not dagster_event.asset_key or dagster_event.event_type not in _BATCHED_KINDS:
            return None
        return dagster_event.event_type


# -- a check evaluation's link to what it checked -------------------------------------------------


def check_target(record: dg.EventLogRecord) -> Any:
    """What `AssetCheckEvaluation(target_materialization_data=...)` takes for a materialization record.

    Dagster links a check's evaluation to the materialization it checked (the UI shows it on the
    evaluation); the link's class is not exported. Without it (None) the evaluation is still stored
    on its minute file, just not linked.
    """
    try:
        from dagster._core.definitions.asset_checks.asset_check_evaluation import (
            AssetCheckEvaluationTargetMaterializationData,
        )
    except ImportError:
        _warn_once("check evaluations", "AssetCheckEvaluationTargetMaterializationData moved")
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )
