"""Shared test helpers: derive rows from bytes, read exports, build small log trees."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import orjson

from jam_assets.core.transform import ListSink, MinuteFileSummary, transform_stream

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "jam-telemetry"
# A copy of shared/jam-telemetry/samples, so the suite runs on a checkout without shared/;
# test_samples_copy_matches_shared keeps the two equal.
SAMPLES = Path(__file__).resolve().parent / "samples"


def sample_path(msg_type: str) -> Path:
    for kind in ("real", "reconstructed"):
        path = SAMPLES / kind / f"msg_{msg_type}.json"
        if path.exists():
            return path
    raise FileNotFoundError(f"no sample for msg_type {msg_type} under {SAMPLES}")


def sample_line(msg_type: str) -> bytes:
    return sample_path(msg_type).read_bytes().strip()


def sample_json(msg_type: str) -> dict:
    return orjson.loads(sample_line(msg_type))


def derive(
    data: bytes, minute_file: str = "2025/04/23/0600", aliases=None
) -> tuple[dict[str, list[dict]], MinuteFileSummary]:
    sink = ListSink()
    summary = transform_stream(io.BytesIO(data), minute_file, sink, aliases)
    return sink.rows, summary


def nonempty(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {t: r for t, r in rows.items() if r}


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_minute(root: Path, key: str, lines: list[bytes]) -> Path:
    path = root / f"{key}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warehouse_down(resources: dict, message: str = "the warehouse is down") -> dict:
    """`resources` with a warehouse whose every table write fails, through the real IO manager's
    outputs: nothing is written or published, each table's output fails with `message` (`{table}`
    filled in). Not transient, so no RetryPolicy waits in a test."""
    from jam_assets.defs.io_managers import TablesIOManager
    from jam_assets.sinks.writes import WarehouseWriteError

    class WarehouseDown(TablesIOManager):
        def write_run(self, context, run):
            if run.outcome is None:
                run.outcome = {t: WarehouseWriteError(t, message.format(table=t)) for t in run.tables}
            return run.outcome

    tables = resources["table_io_manager"]
    return {**resources, "table_io_manager": WarehouseDown(settings=tables.settings, warehouse=tables.warehouse)}
