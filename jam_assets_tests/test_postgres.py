"""dagster.postgres.yaml against a real PostgreSQL server: runs, partitions, checks and the sensor."""

import dagster as dg
import psycopg2
import pytest
import yaml

from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files

from .helpers import PROJECT, sample_line, write_minute
from .pg import postgres_server

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_instance(pg, monkeypatch):
    for var, key in (("HOST", "host"), ("PORT", "port"), ("DB", "db"), ("USERNAME", "user"), ("PASSWORD", "password")):
        monkeypatch.setenv(f"DAGSTER_PG_{var}", str(pg[key]))
    config = yaml.safe_load((PROJECT / "dagster.postgres.yaml").read_text())
    with dg.instance_for_test(overrides=config) as instance:
        yield instance


def test_the_postgres_instance_stores_runs_partitions_and_checks(pg, pg_instance, settings, resources):
    keys = ["2025/04/23/0600", "2025/04/23/0601"]
    for key in keys:
        write_minute(settings.log_root, key, [sample_line("128"), sample_line("13")])
    assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
    pg_instance.add_dynamic_partitions(minute_files.name, keys)
    result = dg.materialize(
        [minute_file_tables], instance=pg_instance, resources=resources, tags={RANGE[0]: keys[0], RANGE[1]: keys[1]}
    )
    assert result.success
    assert pg_instance.get_materialized_partitions(dg.AssetKey("blocks")) == set(keys)
    # Every check on each minute file of the range (36 x 2), all passed.
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 72 and {(e.partition, e.passed) for e in evaluations} == {(k, True) for k in keys}
    single = dg.materialize([minute_file_tables], instance=pg_instance, resources=resources, partition_key=keys[1])
    assert {(e.partition, e.passed) for e in single.get_asset_check_evaluations()} == {(keys[1], True)}
    assert len(single.get_asset_check_evaluations()) == 36

    with psycopg2.connect(
        host=pg["host"], port=pg["port"], dbname=pg["db"], user=pg["user"], password=pg["password"]
    ) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
            assert cur.fetchone()[0] == 2
            cur.execute(
                "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'minute_files' ORDER BY id"
            )
            assert [r[0] for r in cur.fetchall()] == keys
