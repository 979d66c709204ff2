"""What the BigQuery tests share: production resources pointed at the emulator, a materialize
helper, block lines, and the row-by-row comparison of BigQuery with the JSONL exports."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import orjson
import pytest

from jam_assets.core import schema
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files, range_tags
from jam_assets.defs.resources import resources_for

from .helpers import read_jsonl, sample_json

KEY = "2025/04/23/0600"
KEYS = ["2025/04/23/0600", "2025/04/23/0601"]


def production_environ(settings, bq_dataset) -> dict[str, str]:
    """What an operator sets for production, pointed at the emulator; credentials are each test's own."""
    return {
        "DAGSTER_DEPLOYMENT": "production",
        "JAM_LOG_DIR": settings.log_dir,
        "JAM_EXPORT_DIR": settings.export_dir,
        "JAM_BQ_PROJECT": bq_dataset.project,
        "JAM_BQ_DATASET": bq_dataset.dataset,
        "JAM_BQ_API_ENDPOINT": bq_dataset.emulator.url,
    }


@pytest.fixture
def production(bq_dataset, settings, monkeypatch):
    """Production resources as an operator configures them, pointed at the emulator."""
    for name, value in {**production_environ(settings, bq_dataset), "JAM_BQ_ANONYMOUS": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("JAM_BQ_CREDENTIALS_B64", "GOOGLE_APPLICATION_CREDENTIALS", "DUNE_API_KEY", "JAM_ALERT_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    return resources_for()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(instance, resources, keys, **kwargs):
    registered = set(instance.get_dynamic_partitions(minute_files.name))
    instance.add_dynamic_partitions(minute_files.name, [k for k in keys if k not in registered])
    tags = range_tags(keys[0], keys[-1]) if len(keys) > 1 else {}
    partition = {"partition_key": keys[0]} if len(keys) == 1 else {}
    return dg.materialize(
        [minute_file_tables], instance=instance, resources=resources, tags=tags, **partition, **kwargs
    )


def block_lines(key: str, n: int, team: str = "JAMDUNA") -> list[bytes]:
    when = datetime.strptime(key, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)
    lines = []
    for i in range(n):
        line = sample_json("128")
        line["time"] = when.replace(second=5 * i).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        line["metadata"] = f"team={team}|codec_len=304"
        lines.append(orjson.dumps(line))
    return lines


def exported(settings, table: str) -> list[dict]:
    rows = []
    for path in sorted((settings.export_root / table).rglob("*.jsonl")):
        rows.extend(read_jsonl(path))
    return rows


def _order(table: str) -> str:
    index = {"validatorstatistics": ", validator_id", "corestatistics": ", core", "servicestatistics": ", service_id"}
    return "minute_file, line_no" + index.get(table, "")


def stored(client, dataset_id: str, table: str) -> list[dict]:
    """The table's rows as the exports write them (TIMESTAMP as `YYYY-MM-DDTHH:MM:SS.ffffffZ`)."""
    rows = client.query(f"SELECT * FROM `{dataset_id}.{table}` ORDER BY {_order(table)}").result()
    out = []
    for row in rows:
        item = {}
        for name, value in row.items():
            item[name] = (
                value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if isinstance(value, datetime) else value
            )
        out.append(item)
    return out


def assert_bigquery_equals_exports(settings, bq_env) -> None:
    for table in schema.ALL_TABLES:
        expected = sorted(exported(settings, table), key=lambda r: tuple(r[c] for c in _order(table).split(", ")))
        assert stored(bq_env.client, bq_env.dataset_id, table) == expected, table
