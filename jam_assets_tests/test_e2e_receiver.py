"""The whole path on one machine: node -> receiver -> minute files -> sensor -> tables.

The receiver (`python -m jam_assets.receiver`, as `jam-etl receive` runs it) writes into a log root
that a real `dagster dev` (webserver + daemon) reads. One minute of generated telemetry (the tiny
testnet profile, stamped "now") is sent as a node sends it: half over syslog TCP in Go's log/syslog
framing, half as an HTTP POST. Once that minute is over, minute_file_sensor must materialize raw_log
and every table for it, and the DuckDB warehouse must hold exactly the rows of the lines sent.

The minute file is named by the receiver's UTC clock at receipt, so the expected partition keys are
read from the disk (the lines are sent at least a few seconds before a minute ends, so normally one
key; a second key would be handled the same way). dagster dev starts while the minute runs out, so
the test takes about the rest of the current minute plus ~20 s.
"""

from __future__ import annotations

import io
import os
import socket
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from jam_assets.core import schema
from jam_assets.core.generator import TINY, Generator
from jam_assets.core.transform import ListSink, transform_stream
from jam_assets.devserver import dagster_dev
from jam_assets.home import instance_at, prepare_home

from .helpers import free_port
from .receiver_helpers import LOOPBACK, minute_files, minute_lines, start_receiver

pytestmark = pytest.mark.slow  # a receiver and dagster dev: not in `make test-fast`

# Sending takes milliseconds; a minute with less than this left is skipped so the lines stay in one file.
SEND_MARGIN_SECONDS = 5

SENSOR_STATE = """
query { sensorOrError(sensorSelector: {
    repositoryLocationName: "jam_assets", repositoryName: "__repository__", sensorName: "minute_file_sensor"}) {
  __typename ... on Sensor { sensorState { status } } } }
"""


def wait_for(what: str, predicate, timeout: float, proc=None, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dagster dev exited ({proc.returncode}) while waiting for {what}")
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _webserver_up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
    except requests.RequestException:
        return False


def _sensor_running(client: DagsterGraphQLClient) -> bool:
    try:
        result = client._execute(SENSOR_STATE)["sensorOrError"]
    except Exception:  # the code location may still be loading
        return False
    return result["__typename"] == "Sensor" and result["sensorState"]["status"] == "RUNNING"


def _materialized(home: Path, keys: set[str]) -> bool:
    with instance_at(home) as instance:
        return all(keys <= instance.get_materialized_partitions(dg.AssetKey(a)) for a in schema.MINUTE_FILE_ASSETS)


def _raw_log_lines(home: Path, key: str) -> int:
    with instance_at(home) as instance:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(schema.RAW_LOG), asset_partitions=[key]), limit=1
        ).records
        materialization = record.asset_materialization
        assert materialization is not None
        return materialization.metadata["lines"].value


def _warehouse_counts(path: Path, keys: list[str]) -> dict[str, int]:
    """Rows per table of these minute files, read-only (retried while a run holds DuckDB's write lock)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as conn:
                return {
                    t: conn.execute(
                        f"SELECT count(*) FROM {t} WHERE minute_file IN (SELECT unnest(?))", [keys]
                    ).fetchone()[0]
                    for t in schema.ALL_TABLES
                }
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _expected_rows(lines: list[bytes], key: str) -> dict[str, int]:
    """What the core derives from these lines: the rows the warehouse must hold for them."""
    sink = ListSink()
    transform_stream(io.BytesIO(b"".join(line + b"\n" for line in lines)), key, sink)
    return {t: len(sink.rows[t]) for t in schema.ALL_TABLES}


def _go_syslog(line: bytes) -> bytes:
    """Go's log/syslog over TCP: `<PRI>RFC3339 hostname tag[pid]: msg` and a LF."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    return b"<14>%s %s jamtart[%d]: %s\n" % (stamp, socket.gethostname().encode(), os.getpid(), line)


def test_node_to_tables_through_the_receiver_and_dagster_dev(tmp_path):
    started = time.monotonic()
    home, logs, exports = tmp_path / "home", tmp_path / "logs", tmp_path / "exports"
    prepare_home(home)
    rx = start_receiver(logs, workdir=tmp_path)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JAM_")},
        "DAGSTER_HOME": str(home),
        "JAM_LOG_DIR": str(logs),
        "JAM_EXPORT_DIR": str(exports),
        "JAM_GRACE_SECONDS": "1",
    }
    try:
        with dagster_dev(env, port, tmp_path / "dagster-dev.log") as proc:
            # Send while dagster dev starts: the minute has to run out before the sensor takes its file.
            if 60 - time.time() % 60 < SEND_MARGIN_SECONDS:
                time.sleep(60 - time.time() % 60 + 0.1)
            minute = datetime.now(UTC).replace(second=0, microsecond=0)
            sent = [line.rstrip(b"\n") for line in Generator(TINY, seed=7).minute_lines(minute)]
            half = len(sent) // 2
            by_syslog, by_http = sent[:half], sent[half:]
            with socket.create_connection((LOOPBACK, rx.ports["syslog"])) as s:
                s.sendall(b"".join(_go_syslog(line) for line in by_syslog))
            assert rx.post(by_http) == {"stored": len(by_http), "refused": 0}
            wait_for(
                "the syslog lines to be stored",
                lambda: rx.metrics()['jam_receiver_lines_total{listener="syslog"}'] == len(by_syslog),
                10,
                interval=0.05,
            )

            on_disk = minute_lines(logs)  # every file ends in LF
            assert Counter(on_disk) == Counter(sent), "the minute files hold exactly the lines sent"
            keys = sorted(minute_files(logs))  # the receiver's minute(s) of receipt
            assert keys and set(keys) <= {f"{minute + timedelta(minutes=m):%Y/%m/%d/%H%M}" for m in (0, 1)}, keys

            wait_for("the webserver", lambda: _webserver_up(port), 120, proc)
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            wait_for("minute_file_sensor to be running (GraphQL)", lambda: _sensor_running(client), 60, proc)
            wait_for(
                f"the sensor to materialize raw_log and every table for {keys}",
                lambda: _materialized(home, set(keys)),
                150,
                proc,
            )

            assert sum(_raw_log_lines(home, key) for key in keys) == len(sent)
            counts = _warehouse_counts(exports / "jam.duckdb", keys)
            expected: Counter = Counter()
            for key in keys:
                path = logs / f"{key}.log"
                expected.update(_expected_rows(path.read_bytes().split(b"\n")[:-1], key))
            assert counts == {t: expected[t] for t in schema.ALL_TABLES}
            msg_types = Counter(orjson.loads(line)["msg_type"] for line in sent)
            assert counts["blocks"] == msg_types["128"] > 0
            assert counts["workreports"] == msg_types["255"]
            assert counts["preimages"] == msg_types["142"]
            assert counts["validatorstatistics"] > 0 and counts["rejected_lines"] == 0
    finally:
        code = rx.stop()
    assert code == 0, rx.log_text()
    print(f"node to tables in {time.monotonic() - started:.0f} s ({len(sent)} lines, keys {keys})")
