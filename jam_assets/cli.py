"""`jam-etl`: the command line beside the Dagster UI.

jam-etl run      register every closed minute file under JAM_LOG_DIR and materialize raw_log and
                 every table over them in one single-run backfill, then print a summary
jam-etl sql Q    query the DuckDB warehouse (read-only)
jam-etl dune-forget TABLE
                 make the Dune ledger forget a table deleted in Dune: the next upload creates it again
                 and sends every export
jam-etl receive  the telemetry receiver (syslog TCP, HTTP, WebSocket -> minute files under JAM_LOG_DIR),
                 as `python -m jam_assets.receiver`; runs until SIGTERM or Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .core import schema
from .core.minute_files import is_closed, scan
from .core.watch import contiguous_ranges

if TYPE_CHECKING:  # imported in main(): `jam-etl receive` needs no Dagster (a second to import, 70 MB)
    from .defs.settings import JamSettings


class CliError(Exception):
    pass


def open_instance():
    """The Dagster instance in DAGSTER_HOME (default ./.dagster_home), prepared by jam_assets.home."""
    import dagster as dg

    from .home import home_lock, prepare_home

    home = prepare_home()
    os.environ["DAGSTER_HOME"] = str(home)
    with home_lock(home):  # two jam-etl runs on a new home would both create its tables
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("minute_files")
    return home, instance


PID_TAG, HOST_TAG = "jam/pid", "jam/host"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def release_dead_runs(instance) -> list[str]:
    """Mark failed the jam-etl runs of this machine whose process is gone (killed), freeing their pool slot.

    A run executed in-process holds the `jam_warehouse` slot in the instance; if its process is
    killed, nobody else ends the run, and every later run would wait for that slot forever.
    """
    import dagster as dg

    released = []
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING], tags={HOST_TAG: socket.gethostname()}
        )
    )
    for record in records:
        run = record.dagster_run
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and _process_gone(int(pid)):
            instance.report_run_failed(run, message=f"the jam-etl process {pid} that ran it is gone (killed?)")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(run.run_id)
    return released


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def run(settings: JamSettings, include_open: bool = False) -> int:
    from ._dagster_compat import batch_event_writes
    from .definitions import build_defs
    from .defs.partitions import MINUTE_FILES, MINUTE_FILES_PER_RUN, range_tags
    from .defs.resources import resources_for

    configured, settings = settings, settings.process_config_and_initialize()
    home, instance = open_instance()
    # Before the runs are created: Dagster stores a run's "planned" events (one per minute file and
    # asset) one at a time unless the creating process batches them (a day: 60 s instead of 15).
    batch_event_writes()
    root = settings.log_root
    if not root.is_dir():
        raise CliError(f"JAM_LOG_DIR {root} is not a folder")
    now = datetime.now(UTC)
    files = scan(root)
    open_files = [f for f in files if not is_closed(f.key, now, settings.grace_seconds)]
    if not include_open:
        files = [f for f in files if is_closed(f.key, now, settings.grace_seconds)]
    if not files:
        raise CliError(f"no closed minute files (YYYY/MM/DD/HHMM.log or HHMM.log) under {root}")
    keys = [f.key for f in files]

    registered = set(instance.get_dynamic_partitions(MINUTE_FILES))
    new_keys = [k for k in keys if k not in registered]
    if new_keys:
        instance.add_dynamic_partitions(MINUTE_FILES, new_keys)  # sorted: ranges follow time
    ranges = contiguous_ranges(instance.get_dynamic_partitions(MINUTE_FILES), set(keys), MINUTE_FILES_PER_RUN)

    print(f"jam-etl run: {len(keys)} minute files under {root} ({len(new_keys)} newly registered)", flush=True)
    if open_files and not include_open:
        print(
            f"  skipping {len(open_files)} minute file(s) whose minute is not over yet: {', '.join(f.key for f in open_files)}"
        )
    defs = build_defs(resources_for(settings=configured))
    job = defs.resolve_job_def("minute_tables_job")
    for run_id in release_dead_runs(instance):
        print(
            f"  run {run_id[:8]} was left running by a jam-etl process that is gone: marked failed, its pool slot freed"
        )
    tally = Tally()
    succeeded = True
    for n, (start, end) in enumerate(ranges, 1):
        tags = {**range_tags(start, end), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        of = f" (run {n} of {len(ranges)})" if len(ranges) > 1 else ""
        print(f"  materializing {start} ... {end} in one run{of}", flush=True)
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        tally.add(result)
        succeeded = succeeded and result.success
        del result  # its events are counted; a day's are hundreds of MB
    reports = daily_reports(instance, defs, sorted({k[:10].replace("/", "-") for k in keys}))
    print_summary(tally, settings, home)
    if reports is not None:
        print_reports(reports, settings)
    return 0 if succeeded and (reports is None or reports.success) else 1


def daily_reports(instance, defs, day_keys: list[str]):
    """The leaderboard and quality report of the days the run touched, in one run."""
    from .defs.partitions import range_tags
    from .defs.reports import DAYS

    registered = set(instance.get_dynamic_partitions(DAYS))
    instance.add_dynamic_partitions(DAYS, [d for d in day_keys if d not in registered])
    ordered = [d for d in instance.get_dynamic_partitions(DAYS) if d in set(day_keys)]
    if not ordered:
        return None
    print(f"  the leaderboard and quality report of {len(ordered)} day(s): {ordered[0]} ... {ordered[-1]}", flush=True)
    tags = {**range_tags(ordered[0], ordered[-1]), PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    return defs.resolve_job_def("daily_reports_job").execute_in_process(
        instance=instance,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


def print_reports(result, settings: JamSettings) -> None:
    rows = {
        e.partition: e.materialization.metadata["rows"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "leaderboard"
    }
    print(
        f"Leaderboard: {sum(rows.values())} rows for {len(rows)} day(s); page {settings.export_root / 'leaderboard' / 'index.html'}"
    )
    print(f"  (try: {self_command()} leaderboard --metric block_author)")


class Tally:
    """What the runs of a `jam-etl run` did, added up run by run, so that a run's result (every event
    it logged, hundreds of MB for a day of minute files) is dropped once it is counted."""

    def __init__(self) -> None:
        self.files = self.lines = self.bytes = self.rejected = 0
        self.rows: dict[str, int] = defaultdict(int)
        # check -> [minute files evaluated, failing evaluations (the worst kept), one passing description]
        self.checks: dict[str, list] = {}
        self.run_ids: list[str] = []
        self.failures: list[str] = []

    def add(self, result) -> None:
        self.run_ids.append(result.run_id)
        for event in result.get_asset_materialization_events():
            mat = event.materialization
            name = mat.asset_key.path[-1]
            meta = {k: v.value for k, v in mat.metadata.items()}
            if name == schema.RAW_LOG:
                self.files += 1
                self.lines += meta.get("lines", 0)
                self.bytes += meta.get("bytes", 0)
                self.rejected += meta.get("rejected_lines", 0)
            else:
                self.rows[name] += meta.get("rows", 0)
        for e in result.get_asset_check_evaluations():
            entry = self.checks.setdefault(f"{e.asset_key.to_user_string()}.{e.check_name}", [0, 0, None, None])
            entry[0] += 1
            if e.passed:
                entry[3] = entry[3] or e.description
            else:
                entry[1] += 1
                if entry[2] is None or (e.severity.value == "ERROR" and entry[2].severity.value != "ERROR"):
                    entry[2] = e
        if not result.success:
            for e in result.all_events:
                if e.is_step_failure:
                    err = e.step_failure_data.error
                    self.failures.append(
                        f"Run {result.run_id} failed: {err.message.strip() if err else 'see the Dagster UI'}"
                    )


def print_summary(tally: Tally, settings: JamSettings, home: Path) -> None:
    print()
    print(
        f"Summary: {tally.files} files, {tally.lines} lines, {_human_bytes(tally.bytes)}, {tally.rejected} rejected lines"
    )
    width = max(len(t) for t in schema.ALL_TABLES)
    for table in schema.ALL_TABLES:
        print(f"  {table:<{width}}  {tally.rows.get(table, 0):>9,}")
    print_checks(tally)
    for failure in tally.failures:
        print(failure)
    print(f"Exports: {settings.export_root}")
    print(
        f'DuckDB:  {settings.duckdb_path}  (try: {self_command()} sql "SELECT team, count(*) FROM blocks GROUP BY 1")'
    )
    runs = ", ".join(r[:8] for r in tally.run_ids[:5]) + (
        f" and {len(tally.run_ids) - 5} more" if len(tally.run_ids) > 5 else ""
    )
    print(f"Dagster: runs {runs} in {home} (`make dev` shows them)")


def print_checks(tally: Tally) -> None:
    """One line per check: pass, or in how many minute files it failed and the worst one's headline."""
    from .defs.checks import CHECK_SPECS

    if not tally.checks:
        return
    print("Checks:")
    for name in sorted(f"{s.asset_key.to_user_string()}.{s.name}" for s in CHECK_SPECS):
        minutes, failing, worst, passing = tally.checks.get(name, [0, 0, None, None])
        if not minutes:
            print(f"  -     {name}: not evaluated (its run failed before the checks)")
        elif not failing:
            print(f"  pass  {name}: " + (passing if minutes == 1 else f"passed in all {minutes} minute files"))
        else:
            status = "FAIL" if worst.severity.value == "ERROR" else "warn"
            where = f" in {failing} of {minutes} minute files" if minutes > 1 else ""
            print(f"  {status:<4}  {name}{where}: {worst.description}")


def self_command() -> str:
    """How to call jam-etl again, as this process was called: `jam-etl` only when that is on PATH."""
    import shutil

    argv0 = Path(sys.argv[0])
    if argv0.name == "jam-etl":
        found = shutil.which("jam-etl")
        if found and Path(found).resolve() == argv0.resolve():
            return "jam-etl"
        try:
            return str(argv0.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(argv0)
    return f"{Path(sys.executable).name} -m jam_assets.cli"


def leaderboard(settings: JamSettings, day: str | None, metric: str) -> int:
    """The ranked table of one metric for a day (default: the newest day exported)."""
    from .defs.reports import read_recent
    from .leaderboard.compute import METRICS
    from .leaderboard.terminal import format_table

    if metric not in METRICS:
        raise CliError(f"--metric {metric!r} is not one of: {', '.join(METRICS)}")
    if day is not None and not (len(day) == 10 and day[4] == day[7] == "-" and day.replace("-", "").isdigit()):
        raise CliError(f"--day {day!r} is not a day written YYYY-MM-DD")
    base = settings.export_root / "leaderboard"
    exported = sorted(str(p.relative_to(base))[: -len(".jsonl")].replace("/", "-") for p in base.glob("*/*/*.jsonl"))
    if not exported:
        raise CliError(f"no leaderboard under {base} yet: run `make run` (or `{self_command()} run`) first")
    day = day or exported[-1]
    if day not in exported:
        raise CliError(f"no leaderboard for {day}; days exported: {exported[0]} ... {exported[-1]}")
    try:
        print(format_table(read_recent(settings, "leaderboard", day, 1), metric), flush=True)
    except BrokenPipeError:  # `| head`: the reader is gone; say nothing more, at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def sql(settings: JamSettings, query: str) -> int:
    import duckdb

    path = settings.duckdb_path
    if not path.exists():
        raise CliError(f"no DuckDB warehouse at {path} yet: run `make run` (or `jam-etl run`) first")
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            conn.sql(query).show(max_rows=100, max_width=200)
    except duckdb.Error as exc:
        raise CliError(f"DuckDB: {exc}") from None
    return 0


def dune_forget(settings: JamSettings, table: str) -> int:
    """After deleting `jam_<table>` in Dune (its schema changed, or an older version created it): the
    ledger forgets the table and its uploads, so the next hourly upload creates it and sends every export."""
    from .defs.resources import dune_resource
    from .defs.settings import Env
    from .sinks.dune import DuneError, forget_table

    known = (*schema.ALL_TABLES, *schema.DAY_TABLES)
    if table not in known:
        raise CliError(f"{table!r} is not a table; the tables are: {', '.join(known)}")
    dune = dune_resource(Env())
    if dune is None:
        raise CliError("DUNE_API_KEY is not set: the ledger is kept per Dune namespace, set it and DUNE_NAMESPACE")
    cfg = dune.process_config_and_initialize().config()
    try:
        forget_table(settings.export_root, cfg, table)
    except DuneError as exc:
        raise CliError(str(exc)) from None
    print(
        f"the Dune ledger forgot dune.{cfg.namespace}.{cfg.dune_table(table)}: the next upload creates it "
        "and sends every export again",
        flush=True,
    )
    return 0


def receive() -> int:
    """`jam-etl receive`: the receiver exactly as `python -m jam_assets.receiver` runs it (same settings,
    same log, same exit codes), with a bad setting reported as `jam-etl: ...` (exit 2)."""
    import asyncio

    from .receiver.config import ConfigError, from_env
    from .receiver.server import Receiver, _setup_logging

    _setup_logging()
    try:
        config = from_env()
        asyncio.run(Receiver(config).run())
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jam-etl", description="JAM telemetry minute files -> tables, through Dagster."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="materialize every minute file under JAM_LOG_DIR in one run, then summarise")
    run_p.add_argument("--include-open", action="store_true", help="also process files whose minute is not over yet")
    sql_p = sub.add_parser("sql", help="query the DuckDB warehouse read-only")
    sql_p.add_argument("query")
    board_p = sub.add_parser("leaderboard", help="print the ranked teams of one metric for a day")
    board_p.add_argument("--day", help="YYYY-MM-DD (default: the newest day)")
    board_p.add_argument(
        "--metric",
        default="block_author",
        help="block_author (default), refine, assurance, ticket, "
        "or a count: blocks, work_reports, assurances, tickets, preimages",
    )
    forget_p = sub.add_parser(
        "dune-forget", help="make the Dune ledger forget a table you deleted in Dune (the next upload recreates it)"
    )
    forget_p.add_argument("table", help="e.g. blocks (the Dune table is jam_blocks)")
    sub.add_parser(
        "receive",
        help="run the telemetry receiver: syslog over TCP, HTTP and WebSocket into minute files under JAM_LOG_DIR "
        "(settings: JAM_RECEIVER_* variables, see the README)",
    )
    args = parser.parse_args(argv)
    if args.command == "receive":
        try:
            return receive()
        except CliError as exc:
            print(f"jam-etl: {exc}", file=sys.stderr)
            return 2
    from .defs.settings import SettingsError, settings_from_env

    try:
        from .defs.resources import deployment_name

        settings = settings_from_env(production=deployment_name() == "production")
        if args.command == "run":
            return run(settings, include_open=args.include_open)
        if args.command == "leaderboard":
            return leaderboard(settings.process_config_and_initialize(), args.day, args.metric)
        if args.command == "dune-forget":
            return dune_forget(settings.process_config_and_initialize(), args.table)
        return sql(settings.process_config_and_initialize(), args.query)
    except (CliError, SettingsError) as exc:
        print(f"jam-etl: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
