"""The leaderboard and the quality report: per UTC day, computed in the warehouse from the tables.

`daily_reports` (one step for both) is partitioned by day (`days`, keyed YYYY-MM-DD, registered when
a day's first minute file is processed). `daily_reports_sensor` brings a day up to date after any run
that materialized its minute files, at most every few minutes per day (the last such run is always
followed). Both are written like the tables: the warehouse (a day replaced at once), then
`<export root>/<table>/YYYY/MM/DD.jsonl`, and the page `<export root>/leaderboard/index.html`.
"""

import json
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from .._dagster_compat import add_partition_metadata
from ..core import schema
from ..leaderboard import page
from ..leaderboard.compute import TIMED_METRICS
from .assets import OWNERS, POOL, column_schema
from .io_managers import day_export_path
from .partitions import MINUTE_FILES
from .settings import JamSettings
from .warehouses import Warehouse

DAYS = "days"
days = dg.DynamicPartitionsDefinition(name=DAYS)
PAGE_DAYS = 30  # the web page and the UI's chart show this many days
DEBOUNCE_SECONDS = 300  # a day's reports are recomputed at most this often while its minutes arrive

_DESCRIPTIONS = {
    "leaderboard": "The JAM implementer leaderboard: per day, team and metric, the count and nearest-rank "
    "median, p90, min and max of elapsed (µs), the rank among unflagged teams with enough values, and a flag "
    "(unit_suspect, too_few_values).",
    "quality_report": "Per day, team, table and check: rows checked, rows failing, the worst severity and the "
    "first failing row (minute file, line, value).",
}


def day_of(minute_file: str) -> str:
    return minute_file[:10].replace("/", "-")


def group_by_day(rows: Iterable[dict], day_keys: Iterable[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {d: [] for d in day_keys}
    for row in rows:
        out[row["day"]].append(row)
    return out


def read_recent(settings: JamSettings, table: str, newest: str, count: int = PAGE_DAYS) -> list[dict]:
    """The exported rows of `table` for the `count` days up to `newest`."""
    last = date.fromisoformat(newest)
    rows = []
    for n in range(count - 1, -1, -1):
        path = day_export_path(settings.export_root, table, (last - timedelta(days=n)).isoformat())
        if path.exists():
            rows.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return rows


def write_page(settings: JamSettings, newest: str) -> str:
    """Rebuild `<export root>/leaderboard/index.html` from the exports (replaced atomically)."""
    board = read_recent(settings, "leaderboard", newest)
    quality = read_recent(settings, "quality_report", newest)
    html = page.render_html(board, quality, datetime.now(UTC), settings.quality_bounds().elapsed)
    path = settings.export_root / "leaderboard" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".html.partial")
    partial.write_text(html)
    os.replace(partial, path)
    return str(path)


@dg.multi_asset(
    name="daily_reports",
    outs={
        t: dg.AssetOut(
            io_manager_key="day_io_manager",
            group_name="reports",
            description=_DESCRIPTIONS[t],
            metadata={"dagster/column_schema": column_schema(t), "schema_file": f"schema/{t}.json"},
            kinds={"jsonl"},
            owners=OWNERS,
        )
        for t in schema.DAY_TABLES
    },
    # Every minute file of a day feeds that day (the mapping between minute_files and days is the
    # day of the key: Dagster has no built-in mapping between two dynamic partitions definitions).
    deps=[dg.AssetDep(t, partition_mapping=dg.AllPartitionMapping()) for t in schema.TABLES],
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a year of days is one run
    pool=POOL,
)
def daily_reports(context: dg.AssetExecutionContext, settings: JamSettings, warehouse: Warehouse):
    day_keys = sorted(context.partition_keys)
    board, quality = warehouse.daily_reports(day_keys, settings.leaderboard_min_values, settings.quality_bounds())
    by_day = group_by_day(board, day_keys)
    quality_by_day = group_by_day(quality, day_keys)
    add_partition_metadata(context, "leaderboard", {d: {"rows": len(r)} for d, r in by_day.items()})
    add_partition_metadata(
        context,
        "quality_report",
        {d: {"rows": len(r), "failing": sum(1 for q in r if q["severity"])} for d, r in quality_by_day.items()},
    )
    newest = day_keys[-1]
    recent = [r for r in board if r["day"] == newest]
    # The chart's days: every day this run computed (their exports are written after this step, so
    # they cannot be read back yet: a backfill's first materialization would chart its newest day
    # only), and the exported days before them, PAGE_DAYS in all.
    oldest = (date.fromisoformat(newest) - timedelta(days=PAGE_DAYS - 1)).isoformat()
    history = [r for r in read_recent(settings, "leaderboard", newest) if r["day"] not in by_day] + [
        r for r in board if r["day"] >= oldest
    ]
    # (markdown_table heads each table with its metric; the charts need theirs.)
    leaderboard_md = "\n\n".join(page.markdown_table(recent, m) for m in TIMED_METRICS)
    charts_md = "\n\n".join(f"**{m}**\n\n{page.chart_markdown(history, m)}" for m in TIMED_METRICS)
    yield dg.Output(
        by_day,
        "leaderboard",
        metadata={
            "leaderboard": dg.MetadataValue.md(f"Day {newest}\n\n{leaderboard_md}"),
            "medians": dg.MetadataValue.md(charts_md),
            "page": dg.MetadataValue.path(str(settings.export_root / "leaderboard" / "index.html")),
        },
    )
    failures = [q for q in quality if q["severity"]]
    yield dg.Output(quality_by_day, "quality_report", metadata={"failing": len(failures)})
    # Both tables are written (their outputs handled): the page shows what they hold.
    context.log.info(f"leaderboard page rebuilt: {write_page(settings, newest)}")


daily_reports_job = dg.define_asset_job(
    "daily_reports_job",
    selection=dg.AssetSelection.assets(daily_reports),
    partitions_def=days,
    description="The leaderboard and the quality report of the selected days.",
)


def run_days(run: dg.DagsterRun, ordered_minutes: Sequence[str]) -> set[str]:
    """The days of the minute files a run covered, from its partition tags."""
    tags = run.tags
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        try:
            covered = ordered_minutes[ordered_minutes.index(start) : ordered_minutes.index(end) + 1]
        except ValueError:  # a key forgotten since (retention): its own days, at least
            covered = [start, end]
        return {day_of(k) for k in covered}
    key = tags.get("dagster/partition")
    return {day_of(key)} if key and len(key) == 15 else set()


_OTHER_JOBS = {"daily_reports_job", "prune_minute_partitions_job", "dune_upload_job"}


def _wrote_tables(run: dg.DagsterRun) -> bool:
    """Whether a run materialized minute-file tables (no selection: everything its job has)."""
    if run.job_name in _OTHER_JOBS:
        return False
    return not run.asset_selection or any(k.path[-1] in schema.TABLES for k in run.asset_selection)


def reported_after(instance: dg.DagsterInstance, day: str, moment: float) -> bool:
    """Whether both of the day's reports were materialized after `moment`. `jam-etl run` makes the
    reports of its days itself: without this, the sensor's first tick in `dagster dev` afterwards
    would compute every one of them again (60 runs after a 60-day history)."""
    for report in schema.DAY_TABLES:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(report), asset_partitions=[day]), limit=1
        ).records
        if not latest or latest[0].timestamp <= moment:
            return False
    return True


@dg.sensor(
    name="daily_reports_sensor",
    job=daily_reports_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Recomputes a day's leaderboard and quality report after runs that materialized its minute "
    f"files: at most every {DEBOUNCE_SECONDS // 60} minutes per day, and always after the last such run.",
)
def daily_reports_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    since = float(state.get("since", 0.0))
    pending: dict[str, float] = dict(state.get("pending", {}))
    last: dict[str, float] = dict(state.get("last", {}))
    now = time.time()
    records = context.instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS], updated_after=datetime.fromtimestamp(since, UTC) if since else None
        ),
        limit=500,
        order_by="update_timestamp",
        ascending=True,
    )
    ordered = context.instance.get_dynamic_partitions(MINUTE_FILES) if records else []
    touched: dict[str, float] = {}  # day -> the end of the newest run that wrote its minute files
    for record in records:
        ended = record.update_timestamp.timestamp()
        since = max(since, ended)
        if _wrote_tables(record.dagster_run):
            for day in run_days(record.dagster_run, ordered):
                touched[day] = max(touched.get(day, 0.0), ended)
    for day, ended in sorted(touched.items()):
        if day not in pending and not reported_after(context.instance, day, ended):
            pending[day] = max(now, last.get(day, 0.0) + DEBOUNCE_SECONDS)
    due = sorted(d for d, at in pending.items() if at <= now)
    registered = set(context.instance.get_dynamic_partitions(DAYS)) if due else set()
    for day in due:
        pending.pop(day)
        last[day] = now
    last = {d: t for d, t in last.items() if t > now - 2 * 86400}
    cursor = json.dumps({"since": since, "pending": pending, "last": last}, sort_keys=True)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=d, run_key=f"{d}@{int(now)}") for d in due],
        dynamic_partitions_requests=[days.build_add_request([d for d in due if d not in registered])]
        if any(d not in registered for d in due)
        else [],
        cursor=cursor,
    )
