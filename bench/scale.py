"""Scale benchmarks (issue: two months of history, the UI at 86,400 partitions, a full-size network
live). Not tests: they print figures; `bench/run.py` calls them, and `make soak` runs the live hour.

    history(days)        the first backfill: `days` of tiny minute files in one `jam-etl run`, its wall
                         time, the peak memory of each of its runs (flat or not), and whether every
                         table holds exactly what a per-file run makes of a sample of minutes
    ui_backfill(days)    the same minute files through a UI-launched backfill (GraphQL, as the UI's
                         Materialize > all partitions) under `dagster dev`
    ui_at_size(base)     the operator's pages over that instance in headless Chromium, time to content
    sensor_at_size(base) one sensor tick over that instance (its 86,400 registered minute files)
    soak(minutes)        toaster-profile minute files written in real time while `dagster dev` ingests
                         them: latency from minute close to every table, memory, rejected lines
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from jam_assets.core.generator import TINY, TOASTER, Generator, write_minutes  # noqa: E402
from jam_assets.home import prepare_home  # noqa: E402

START = datetime(2025, 4, 23, 0, 0, tzinfo=UTC)
Record = Callable[[str, str, str], None]


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- memory of a process tree -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(_children(p))
    return total / 1024


class Sampler:
    """Samples a process tree's memory every `every` s; `mark(label)` starts a new segment."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.segments: dict[str, float] = {}
        self.label = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            rss = tree_rss_mb(self.pid)
            self.segments[self.label] = max(self.segments.get(self.label, 0.0), rss)

    def mark(self, label: str) -> None:
        self.label = label

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.segments


# -- the first backfill ---------------------------------------------------------------------------------


def keys_of(days: int) -> list[str]:
    return [(START + timedelta(minutes=i)).strftime("%Y/%m/%d/%H%M") for i in range(days * 1440)]


def history_logs(days: int) -> Path:
    logs = OUT / f"history-{days}d-logs"
    if not (logs / ".complete").exists():
        shutil.rmtree(logs, ignore_errors=True)
        say(f"generating {days * 1440:,} tiny minute files ({days} days)")
        write_minutes(logs, TINY, START, days * 1440, seed=14)
        (logs / ".complete").write_text("")
    return logs


def env_for(base: Path, logs: Path) -> dict[str, str]:
    home = base / "home"
    prepare_home(home)
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "JAM_LOG_DIR": str(logs),
        "JAM_EXPORT_DIR": str(base / "exports"),
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
    }


def _rows_of(path: Path, key: str) -> dict[str, int]:
    from jam_assets.core.transform import ListSink, transform_stream

    sink = ListSink()
    with path.open("rb") as f:
        transform_stream(f, key, sink)
    return {t: len(r) for t, r in sink.rows.items()}


def _exact_sample(base: Path, logs: Path, keys: list[str], n: int = 20) -> tuple[int, int]:
    import duckdb

    from jam_assets.core import schema

    sample = sorted(random.Random(7).sample(keys, min(n, len(keys))))
    exact = 0
    with duckdb.connect(str(base / "exports" / "jam.duckdb"), read_only=True) as conn:
        for key in sample:
            expected = _rows_of(logs / f"{key}.log", key)
            stored = {
                t: conn.execute(f"SELECT count(*) FROM {t} WHERE minute_file = ?", [key]).fetchone()[0]
                for t in schema.ALL_TABLES
            }
            exact += stored == expected
    return exact, len(sample)


def history(days: int, record: Record) -> Path:
    """`days` of tiny minute files in one `jam-etl run`: time, memory per run, exactness."""
    logs = history_logs(days)
    base = OUT / f"history-{days}d"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = env_for(base, logs)
    say(f"jam-etl run over {days * 1440:,} minute files")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "jam-etl"), "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = Sampler(proc.pid)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("  materializing ") or "leaderboard and quality report" in line:
            sampler.mark(line.strip())
            say(line.strip())
        tail = (tail + [line])[-60:]
    proc.wait()
    took = time.monotonic() - started
    peaks = list(sampler.stop().values())
    if proc.returncode != 0:
        say("".join(tail))
        raise SystemExit(f"jam-etl run failed ({proc.returncode})")
    runs = peaks[1:-1] or peaks  # the minute-file runs (not start-up, not the reports)
    exact, sampled = _exact_sample(base, logs, keys_of(days))
    (base / "figures.json").write_text(json.dumps({"seconds": took, "peaks_mb": peaks}))
    record(
        f"first backfill, {days * 1440:,} tiny minute files ({days} d), one jam-etl run",
        f"{took / 60:.1f} min ({1000 * took / (days * 1440):.0f} ms a file); peak memory per run "
        f"{runs[0]:.0f} MB (first) .. {max(runs):.0f} MB (max) .. {runs[-1]:.0f} MB (last); "
        f"{exact} of {sampled} sampled minutes exact",
        "<= 15 min for 60 d, memory flat",
    )
    return base


# -- the same through a UI-launched backfill ---------------------------------------------------------

BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }
"""
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
  status numCancelable partitionStatusCounts { runStatus count } } } }
"""


def ui_backfill(days: int, record: Record) -> None:
    """The minute files of `history(days)` through `dagster dev`: registered beforehand (so the sensor
    adopts them), then one backfill of every partition of raw_log and the tables, launched as the UI
    does; timed until the backfill is done."""
    import dagster as dg

    from jam_assets.core import schema
    from jam_assets.defs.partitions import MINUTE_FILES
    from jam_assets.home import instance_at
    from jam_assets_tests.browser import graphql, serve_ui

    logs = history_logs(days)
    base = OUT / f"ui-backfill-{days}d"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = env_for(base, logs)
    with instance_at(base / "home") as instance:
        instance.add_dynamic_partitions(MINUTE_FILES, keys_of(days))
    with serve_ui(env, base / "dagster-dev.log") as url:
        selection = [{"path": [a]} for a in (schema.RAW_LOG, *schema.ALL_TABLES)]
        started = time.monotonic()
        answer = graphql(
            url, BACKFILL, {"params": {"assetSelection": selection, "allPartitions": True, "fromFailure": False}}
        )["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"backfill not launched: {answer}")
        backfill = answer["backfillId"]
        sampler = Sampler(os.getpid(), every=2.0)  # the dagster dev tree is this process's child
        status = None
        while True:
            time.sleep(5)
            status = graphql(url, BACKFILL_STATUS, {"id": backfill})["partitionBackfillOrError"]
            if status["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                break
        took = time.monotonic() - started
        peak = max(sampler.stop().values())
    with instance_at(base / "home") as instance:
        done = len(instance.get_materialized_partitions(dg.AssetKey("blocks")))
    record(
        f"first backfill, {days * 1440:,} minute files, UI-launched under dagster dev",
        f"{took / 60:.1f} min; backfill {status['status'] if status else '?'}; {done:,} minute files in blocks; "
        f"peak memory {peak:.0f} MB (dagster dev and its runs)",
        "<= 15 min for 60 d",
    )


# -- the UI and the sensor over a big instance --------------------------------------------------------


def ui_at_size(base: Path, record: Record, repeat: int = 3) -> None:
    from playwright.sync_api import expect

    from jam_assets_tests.browser import VIEWS, chromium, measure, new_page, serve_ui

    # The tests allow a view 60 s; at this size a cold checks tab took two minutes: record it, not a timeout.
    expect.set_options(timeout=900_000)
    env = env_for(base, history_logs_for(base))
    with serve_ui(env, base / "dagster-dev-ui.log", timeout=600) as url, chromium() as browser:
        page = new_page(browser, url)
        times = measure(page, VIEWS, repeat=repeat)
    partitions = base.name.split("-")[1]
    for view, seconds in times.items():
        record(
            f"UI at {partitions} of minute files: {view}",
            f"{statistics.median(seconds):.1f} s to content (median of {repeat}; max {max(seconds):.1f} s)",
            "<= 3 s",
        )


def history_logs_for(base: Path) -> Path:
    return OUT / f"{base.name}-logs"


def sensor_at_size(base: Path, record: Record) -> None:
    """One minute_file_sensor tick over the instance of `history`: a new minute file since its last
    tick (the live case), and the tick that also looks up failed minute files (once a minute)."""
    import dagster as dg

    from jam_assets.core.watch import WatchCursor
    from jam_assets.defs.resources import local_resources
    from jam_assets.defs.sensors import minute_file_sensor
    from jam_assets.defs.settings import JamSettings
    from jam_assets.home import instance_at

    logs = history_logs_for(base)
    keys = sorted(p.relative_to(logs).as_posix()[:-4] for p in logs.glob("*/*/*/*.log"))
    settings = JamSettings(log_dir=str(logs), export_dir=str(base / "exports"))
    resources = local_resources(settings)
    with instance_at(base / "home") as instance:
        registered = len(instance.get_dynamic_partitions("minute_files"))
        times = {}
        for label, checked in (("a tick", time.time()), ("a tick that looks up failures", 0.0)):
            spent = []
            for _ in range(5):
                cursor = WatchCursor(keys[-1], {}, {}, checked).dumps()
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    t = time.perf_counter()
                    minute_file_sensor(context)
                    spent.append(time.perf_counter() - t)
            times[label] = statistics.median(spent)
    for label, seconds in times.items():
        record(
            f"sensor: {label}, {registered:,} minute files registered",
            f"{1000 * seconds:.0f} ms",
            "<= 100 ms",
        )


# -- a full-size network, live ------------------------------------------------------------------------


def soak(minutes: int, record: Record) -> None:
    """Toaster minute files written in real time for `minutes` while `dagster dev` ingests them."""
    import dagster as dg

    from jam_assets.core import schema
    from jam_assets.home import instance_at
    from jam_assets_tests.browser import serve_ui

    base = OUT / f"soak-{minutes}m"
    shutil.rmtree(base, ignore_errors=True)
    logs = base / "logs"
    logs.mkdir(parents=True)
    env = env_for(base, logs)
    gen = Generator(TOASTER, seed=21)
    closed: dict[str, datetime] = {}
    latency: dict[str, float] = {}
    memory: list[float] = []
    current: tuple[str, bytes, int] | None = None  # the minute being written: key, its lines, bytes written
    with serve_ui(env, base / "dagster-dev.log"):
        end = (datetime.now(UTC) + timedelta(minutes=minutes + 1)).replace(second=0, microsecond=0)
        while True:
            now = datetime.now(UTC)
            minute = now.replace(second=0, microsecond=0)
            key = minute.strftime("%Y/%m/%d/%H%M")
            if current is not None and current[0] != key:  # the minute is over: the rest of its lines
                done_key, data, written = current
                with (logs / f"{done_key}.log").open("ab") as f:
                    f.write(data[written:])
                current = None
            if minute < end and (current is None) and key not in closed:
                # A node network's minute, arriving through the minute as the receiver appends it.
                data = b"".join(gen.minute_lines(minute))
                (logs / f"{key}.log").parent.mkdir(parents=True, exist_ok=True)
                current, closed[key] = (key, data, 0), minute + timedelta(seconds=60)
                say(f"{key}: writing {len(data) / 1e6:.0f} MB over the minute")
            if current is not None:
                cur_key, data, written = current
                upto = data.rfind(b"\n", 0, int(len(data) * min(1.0, now.second / 60)) + 1) + 1
                if upto > written:
                    with (logs / f"{cur_key}.log").open("ab") as f:
                        f.write(data[written:upto])
                    current = (cur_key, data, upto)
            with instance_at(base / "home") as instance:
                done = set.intersection(
                    *(instance.get_materialized_partitions(dg.AssetKey(t)) for t in ("raw_log", *schema.ALL_TABLES))
                )
            for k in sorted(done):
                if k in closed and k not in latency:
                    latency[k] = (datetime.now(UTC) - closed[k]).total_seconds()
                    say(f"{k}: every table {latency[k]:.0f} s after its minute closed")
            memory.append(tree_rss_mb(os.getpid()))
            if minute >= end and len(latency) == len(closed) or now > end + timedelta(minutes=5):
                break
            time.sleep(2)
    with instance_at(base / "home") as instance:
        rejected = sum(
            e.asset_materialization.metadata["rows"].value
            for e in instance.fetch_materializations(dg.AssetKey("rejected_lines"), limit=10_000).records
        )
    values = sorted(latency.values())
    p95 = values[int(0.95 * (len(values) - 1))] if values else float("nan")
    third = max(1, len(memory) // 3)
    record(
        f"soak: {minutes} min of toaster minute files in real time under dagster dev",
        f"{len(latency)} of {len(closed)} minutes in every table; latency p95 {p95:.0f} s, max {max(values or [0]):.0f} s; "
        f"memory {statistics.median(memory[:third]):.0f} MB (first third) -> {statistics.median(memory[-third:]):.0f} MB "
        f"(last third), peak {max(memory):.0f} MB; {rejected} rejected lines",
        "p95 <= 30 s, max <= 60 s, memory flat, 0 rejected",
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="make soak: a full-size network, live")
    parser.add_argument("what", choices=["soak"])
    parser.add_argument("minutes", type=int, nargs="?", default=60)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    soak(args.minutes, lambda f, v, t: rows.append((f, v, t)))
    print(f"\njam-etl soak on {os.cpu_count()} cores, {datetime.now():%Y-%m-%d %H:%M}")
    for figure, value, target in rows:
        print(f"  {figure}  {value}  {target}")


if __name__ == "__main__":
    main()
