"""End to end under the real `dagster dev` (webserver + daemon): the sensor ingests dropped minute files,
a partition backfill is launched through GraphQL as the UI does, a sensor re-run overlaps it on the
same partition, and every output is exact: no DuckDB lock error, no lost or duplicated row."""

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

from jam_assets.core import schema
from jam_assets.devserver import dagster_dev as dev_server
from jam_assets.home import instance_at, prepare_home

from .helpers import free_port, sample_json

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 20) { status } } } }
"""


def wait_for(what: str, predicate, timeout: float, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dagster dev exited ({proc.returncode}) while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def block_lines(key: str, n: int, team: str) -> bytes:
    when = datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    out = []
    for i in range(n):
        line = sample_json("128")
        line["time"] = (when + timedelta(seconds=5 * i)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        line["metadata"] = f"team={team}|codec_len=304"
        out.append(orjson.dumps(line))
    return b"".join(line + b"\n" for line in out)


@pytest.fixture
def dagster_dev(tmp_path):
    home, logs, exports = tmp_path / "home", tmp_path / "logs", tmp_path / "exports"
    prepare_home(home)
    logs.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "JAM_LOG_DIR": str(logs),
        "JAM_EXPORT_DIR": str(exports),
        "JAM_GRACE_SECONDS": "1",
    }
    with dev_server(env, port, tmp_path / "dagster-dev.log") as proc:
        wait_for("the webserver", lambda: _up(port), 120, proc)
        yield {
            "port": port,
            "home": home,
            "logs": logs,
            "exports": exports,
            "proc": proc,
            "log": tmp_path / "dagster-dev.log",
        }


def _up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


def materialized(home: Path, keys: set[str]) -> bool:
    with instance_at(home) as instance:
        return all(
            keys <= instance.get_materialized_partitions(dg.AssetKey(t)) for t in ("raw_log", *schema.ALL_TABLES)
        )


def runs(home: Path) -> list:
    with instance_at(home) as instance:
        return list(instance.get_runs())


def test_sensor_ingest_and_a_graphql_backfill_overlapping_it(dagster_dev):
    home, logs, exports = dagster_dev["home"], dagster_dev["logs"], dagster_dev["exports"]
    now = datetime.now(UTC)
    keys = [(now - timedelta(minutes=m)).strftime("%Y/%m/%d/%H%M") for m in (4, 3)]
    for key, n in zip(keys, (3, 4)):
        path = logs / f"{key}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block_lines(key, n, "JAMDUNA"))

    wait_for("the sensor to materialize every table", lambda: materialized(home, set(keys)), 180, dagster_dev["proc"])

    # A backfill over both minutes, launched as the UI launches it...
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev["port"])
    selection = [{"path": [t]} for t in ("raw_log", *schema.ALL_TABLES)]
    launched = client._execute(
        LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": {"partitionNames": keys, "assetSelection": selection}}
    )
    backfill_id = launched["launchPartitionBackfill"]["backfillId"]
    # ...while late lines arrive in the first minute, so the sensor re-runs it over the backfill.
    with (logs / f"{keys[0]}.log").open("ab") as f:
        f.write(block_lines(keys[0], 2, "COLORFULNOTION"))

    def backfill_done():
        status = client._execute(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return (
            status
            if status["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED", "COMPLETED_FAILED", "CANCELED")
            else None
        )

    status = wait_for("the backfill", backfill_done, 240, dagster_dev["proc"])
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
    assert len(status["runs"]) == 1, "a single-run backfill"

    def settled():
        all_runs = runs(home)
        rerun = [
            r for r in all_runs if r.tags.get("dagster/partition") == keys[0] and r.tags.get("dagster/sensor_name")
        ]
        # The first ingest was one range run over both minutes; the late lines give a run of keys[0] alone.
        return all_runs if rerun and all(r.is_finished for r in all_runs) else None

    all_runs = wait_for("the sensor's re-run", settled, 180, dagster_dev["proc"])
    assert {r.status for r in all_runs} == {dg.DagsterRunStatus.SUCCESS}, [(r.run_id, r.status) for r in all_runs]
    log_text = dagster_dev["log"].read_text(errors="replace")
    assert "Could not set lock" not in log_text and "Conflicting lock" not in log_text

    with duckdb.connect(str(exports / "jam.duckdb"), read_only=True) as conn:
        counts = conn.execute("SELECT minute_file, team, count(*) FROM blocks GROUP BY ALL ORDER BY ALL").fetchall()
    assert counts == [(keys[0], "COLORFULNOTION", 2), (keys[0], "Jam-Duna", 3), (keys[1], "Jam-Duna", 4)]
    assert len((exports / "blocks" / f"{keys[0]}.jsonl").read_bytes().splitlines()) == 5
