"""Benchmarks: generate load, measure, print one table of figures. Not tests: nothing here asserts.

    make bench         full sizes (a 512 MB toaster file, a day of tiny minute files, 100,000 files)
    make bench-quick   the same figures on small inputs, in under two minutes

Figures: core throughput against the orjson floor (toaster and tiny), on one process per core as
the asset runs it and on one process; peak RSS at three sizes; time per MB at 1x/2x/4x; a day of
minute files in one single-run backfill vs separate runs; live latency under the real daemon; and
one sensor tick over many files on disk. Each core figure is the best of 3 runs: the machine is
shared, and noise only ever adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PY = sys.executable
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

import scale  # noqa: E402  (bench/scale.py: history, the UI and the sensor at size)

from jam_assets.core.generator import TINY, TOASTER, Generator, write_minutes  # noqa: E402
from jam_assets.devserver import dagster_dev as dev_server  # noqa: E402
from jam_assets.home import prepare_home  # noqa: E402

START = datetime(2025, 4, 23, 6, 0, tzinfo=UTC)
rows: list[tuple[str, str, str]] = []


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def record(figure: str, value: str, target: str = "") -> None:
    rows.append((figure, value, target))
    say(f"{figure}: {value} {target}")


def make_file(profile, mb: int) -> Path:
    path = OUT / "files" / f"{profile.name}-{mb}mb.log"
    if not path.exists():
        say(f"generating {path.name}")
        Generator(profile, seed=1).write_file_of_size(path, mb * 1024 * 1024, START)
    return path


def worker(mode: str, path: Path, workers: int | None = None) -> dict:
    out = OUT / "core-out"
    shutil.rmtree(out, ignore_errors=True)
    args = [PY, str(ROOT / "bench" / "core_worker.py"), mode, str(path), str(out)] + ([str(workers)] if workers else [])
    done = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout)


def best(mode: str, path: Path, workers: int | None = None, runs: int = 3) -> dict:
    """The fastest of `runs`: this machine is shared, and noise only ever adds time."""
    return min((worker(mode, path, workers) for _ in range(runs)), key=lambda r: r["seconds"])


def core_vs_floor(profile, mb: int, label: str) -> None:
    path = make_file(profile, mb)
    floor = best("floor", path)
    one = best("core", path, workers=1)
    core = best("core", path)  # one process per core, as the asset runs it
    size_mb = core["bytes"] / 1e6
    target = "<= 2x" if profile is TOASTER else "<= 1.6x"
    record(
        f"core {label} ({size_mb:.0f} MB, {core['lines']:,} lines)",
        f"{size_mb / core['seconds']:.0f} MB/s, {core['lines'] / core['seconds']:,.0f} lines/s on {os.cpu_count()} processes; "
        f"floor {size_mb / floor['seconds']:.0f} MB/s; ratio {core['seconds'] / floor['seconds']:.2f}x "
        f"(1 process: {size_mb / one['seconds']:.0f} MB/s, {one['seconds'] / floor['seconds']:.2f}x)",
        target,
    )


def memory_and_scaling(sizes: list[int]) -> None:
    results = []
    for mb in sizes:
        core = best("core", make_file(TOASTER, mb))
        results.append(core)
        size = core["bytes"] / 1e6
        budget = 2 * core["bytes"] / 2**20 + 300
        record(
            f"peak RSS, toaster {size:.0f} MB",
            f"{core['peak_rss_mb']:.0f} MB (all processes)",
            f"<= {budget:.0f} MB (2x file + 300)",
        )
    per_mb = [r["seconds"] / (r["bytes"] / 1e6) for r in results]
    record(
        "time per MB at 1x / 2x / 4x (best of 3)",
        " / ".join(f"{1000 * t:.2f} ms" for t in per_mb),
        f"4x/1x = {per_mb[-1] / per_mb[0]:.2f} (<= 1.2)",
    )


def run_env(home: Path, logs: Path, exports: Path) -> dict:
    prepare_home(home)
    return {**os.environ, "DAGSTER_HOME": str(home), "JAM_LOG_DIR": str(logs), "JAM_EXPORT_DIR": str(exports)}


def dagster_day(minutes: int, separate: int) -> None:
    base = OUT / "day"
    shutil.rmtree(base, ignore_errors=True)
    logs = base / "logs"
    say(f"generating {minutes} tiny minute files")
    write_minutes(logs, TINY, START, minutes, seed=3)
    env = run_env(base / "home", logs, base / "exports")
    t = time.perf_counter()
    subprocess.run([str(BIN / "jam-etl"), "run"], env=env, cwd=ROOT, check=True, capture_output=True)
    single = time.perf_counter() - t
    record(
        f"{minutes} minute files, one single-run backfill",
        f"{single:.1f} s wall (incl. process start)",
        "<= 60 s for 1,440" if minutes == 1440 else "(full run: 1,440 files)",
    )
    keys = [(START + timedelta(minutes=i)).strftime("%Y/%m/%d/%H%M") for i in range(separate)]
    t = time.perf_counter()
    for key in keys:
        subprocess.run(
            [
                str(BIN / "dagster"),
                "asset",
                "materialize",
                "-m",
                "jam_assets.definitions",
                "--select",
                "*",
                "--partition",
                key,
            ],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    each = (time.perf_counter() - t) / separate
    record(
        f"separate runs, one per minute file ({separate} measured)",
        f"{each:.1f} s per run; {each * minutes / 60:.1f} min for {minutes} files",
        "(why single-run is the default)",
    )


def sensor_tick(files: int) -> None:
    from jam_assets.core.watch import WatchCursor, plan_from_disk

    root = OUT / f"tree-{files}"
    if not root.exists():
        say(f"creating {files:,} minute files")
        for i in range(files):
            path = root / (START + timedelta(minutes=i)).strftime("%Y/%m/%d/%H%M.log")
            if i == 0 or path.name == "0000.log":
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"{}\n")
    last = (START + timedelta(minutes=files - 1)).strftime("%Y/%m/%d/%H%M")
    now = START + timedelta(minutes=files + 5)
    cursor = WatchCursor(last, {})
    t = time.perf_counter()
    for _ in range(5):
        plan = plan_from_disk(root, cursor, now, 10, 3600, registered=set())
    steady = (time.perf_counter() - t) / 5
    t = time.perf_counter()
    first = plan_from_disk(root, WatchCursor(), now, 10, 3600, registered=set())
    cold = time.perf_counter() - t
    record(
        f"sensor tick, {files:,} files on disk",
        f"{1000 * steady:.0f} ms per tick (cursor {len(plan.cursor.dumps())} B); "
        f"first tick {cold:.1f} s ({len(first.new)} registered, {first.deferred:,} left for later ticks)",
    )


@contextmanager
def dagster_dev(base: Path, logs: Path, port: int) -> Iterator[Path]:
    """`dagster dev` over `logs` with a fresh instance under `base`, its sensor running; yields DAGSTER_HOME."""
    home = base / "home"
    with dev_server(run_env(home, logs, base / "exports"), port, base / "dagster-dev.log"):
        yield home


def wait_materialized(home: Path, keys: list[str], tables: tuple[str, ...], timeout: float) -> bool:
    import dagster as dg

    from jam_assets.home import instance_at

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with instance_at(home) as inst:
                if all(set(keys) <= inst.get_materialized_partitions(dg.AssetKey(t)) for t in tables):
                    return True
        except Exception:  # the instance may not exist yet
            continue
    return False


def daemon_day(minutes: int) -> None:
    """The day of dagster_day again, as the daemon does it: `dagster dev` starts, the sensor's first
    tick registers every closed file and requests one run over all of them."""
    from jam_assets.core import schema

    base = OUT / "daemon-day"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    logs = OUT / "day" / "logs"
    keys = [(START + timedelta(minutes=i)).strftime("%Y/%m/%d/%H%M") for i in range(minutes)]
    start = time.monotonic()
    with dagster_dev(base, logs, 3196) as home:
        done = wait_materialized(home, keys, ("raw_log", *schema.ALL_TABLES), 600)
    took = time.monotonic() - start
    record(
        f"{minutes} minute files through the daemon (sensor -> one run)",
        f"{took:.1f} s from `dagster dev` start to every table" + ("" if done else " (timed out)"),
        "<= 60 s for 1,440" if minutes == 1440 else "(full run: 1,440 files)",
    )


def live_latency(wait_for_real_minute: bool) -> None:
    import duckdb  # noqa: F401  (import cost out of the timed part)

    base = OUT / "live"
    shutil.rmtree(base, ignore_errors=True)
    logs = base / "logs"
    logs.mkdir(parents=True)
    with dagster_dev(base, logs, 3197) as home:
        gen = Generator(TINY, seed=9)
        now = datetime.now(UTC)
        if wait_for_real_minute:
            minute = now.replace(second=0, microsecond=0)
            gen.write_minute(logs, minute)  # written during its own minute; closes at minute end + grace
            closed = minute + timedelta(seconds=70)
        else:
            minute = (now - timedelta(seconds=70)).replace(second=0, microsecond=0)  # the newest closed minute
            time.sleep(5)  # let the webserver and daemon come up
            gen.write_minute(logs, minute)  # already closed: latency counts from the drop
            closed = datetime.now(UTC)
        key = minute.strftime("%Y/%m/%d/%H%M")
        wait_materialized(
            home, [key], ("raw_log", "blocks", "validatorstatistics", "corestatistics", "rejected_lines"), 300
        )
        latency = (datetime.now(UTC) - closed).total_seconds()
        how = "from minute end + grace" if wait_for_real_minute else "from dropping an already-closed file"
        record(f"live latency ({how})", f"{latency:.0f} s to every table, under dagster dev", "<= 45 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.quick:
        core_vs_floor(TOASTER, 32, "toaster")
        core_vs_floor(TINY, 16, "tiny")
        memory_and_scaling([8, 16, 32])
        dagster_day(60, 2)
        daemon_day(60)
        sensor_tick(10_000)
        live_latency(wait_for_real_minute=False)
        big = scale.history(1, record)
        scale.sensor_at_size(big, record)
        scale.ui_at_size(big, record, repeat=2)
        scale.ui_backfill(1, record)
    else:
        core_vs_floor(TOASTER, 512, "toaster")
        core_vs_floor(TINY, 128, "tiny")
        memory_and_scaling([128, 256, 512])
        dagster_day(1440, 20)
        daemon_day(1440)
        sensor_tick(100_000)
        live_latency(wait_for_real_minute=True)
        big = scale.history(60, record)
        scale.sensor_at_size(big, record)
        scale.ui_at_size(big, record)
        scale.ui_backfill(60, record)
    width = max(len(r[0]) for r in rows)
    print(
        f"\njam-etl benchmarks ({'quick' if args.quick else 'full'}) on {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {datetime.now():%Y-%m-%d %H:%M}"
    )
    for figure, value, target in rows:
        print(f"  {figure:<{width}}  {value}  {target}")


if __name__ == "__main__":
    main()
