"""Settings come from the environment through dg.EnvVar; bad or missing ones stop the code location
with a message naming the variable; production never falls back to the bundled samples."""

import dagster as dg
import pytest

from jam_assets.definitions import build_defs
from jam_assets.defs.resources import resources_for
from jam_assets.defs.settings import BUNDLED_LOGS, Env, SettingsError

PRODUCTION = {
    "DAGSTER_DEPLOYMENT": "production",
    "JAM_LOG_DIR": "/var/log/jam",
    "JAM_BQ_PROJECT": "proj",
    "JAM_BQ_DATASET": "crypto_jam",
}


def load(environ):
    return build_defs(env=Env(environ))


def test_local_defaults_are_the_bundled_samples_and_duckdb():
    defs = load({})
    settings = defs.resources["settings"].process_config_and_initialize()
    assert settings.log_root == BUNDLED_LOGS
    assert defs.resources["table_io_manager"].warehouse.name == "DuckDB"


def test_production_loads_with_every_setting_as_an_environment_variable():
    defs = load(PRODUCTION | {"DUNE_API_KEY": "k", "DUNE_NAMESPACE": "jamteam", "JAM_BQ_LOCATION": "EU"})
    warehouse = defs.resources["table_io_manager"].warehouse
    assert warehouse.name == "BigQuery"
    # EnvVars, not values: the UI shows the variable names, and the values are read where runs execute.
    assert warehouse.dataset == dg.EnvVar("JAM_BQ_DATASET") and warehouse.bigquery.project == dg.EnvVar(
        "JAM_BQ_PROJECT"
    )
    assert warehouse.bigquery.location == dg.EnvVar("JAM_BQ_LOCATION")
    assert defs.resources["settings"].log_dir == dg.EnvVar("JAM_LOG_DIR")
    assert (
        defs.resources["dune"].namespace == dg.EnvVar("DUNE_NAMESPACE")
        and defs.resources["dune"].public_tables is False
    )
    assert {j.name for j in defs.jobs} >= {"dune_upload_job"}


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            "JAM_LOG_DIR",
            "JAM_LOG_DIR is not set: in production the pipeline reads the receiver's log root, never the bundled samples",
        ),
        (
            "JAM_BQ_DATASET",
            "JAM_BQ_DATASET is not set: it names the dataset the tables go to (create it first: bq mk --dataset)",
        ),
        ("JAM_BQ_PROJECT", "JAM_BQ_PROJECT is not set: it is the GCP project that holds the dataset"),
    ],
)
def test_production_stops_on_a_missing_setting(missing, message):
    with pytest.raises(SettingsError) as raised:
        load({k: v for k, v in PRODUCTION.items() if k != missing})
    assert str(raised.value) == message


def test_dune_needs_a_namespace_and_has_no_default():
    with pytest.raises(SettingsError) as raised:
        load(PRODUCTION | {"DUNE_API_KEY": "k"})
    assert str(raised.value) == (
        "DUNE_NAMESPACE is not set: DUNE_API_KEY is set, and the tables need your Dune user or team handle"
    )


def test_two_ways_of_giving_credentials_are_rejected():
    with pytest.raises(
        SettingsError, match="both JAM_BQ_CREDENTIALS_B64 and GOOGLE_APPLICATION_CREDENTIALS are set: set one"
    ):
        load(PRODUCTION | {"JAM_BQ_CREDENTIALS_B64": "e30=", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})


def as_run_sees_it(resource, environ, monkeypatch):
    """The resource as a run executing with `environ` gets it: its EnvVars read."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return resource.process_config_and_initialize()


def test_an_endpoint_alone_keeps_the_credentials_anonymous_only_when_asked(monkeypatch):
    regional = PRODUCTION | {"JAM_BQ_API_ENDPOINT": "https://bigquery.europe-west1.rep.googleapis.com"}
    client = load(regional).resources["table_io_manager"].warehouse.bigquery
    assert as_run_sees_it(client, regional, monkeypatch).anonymous is False
    for value, anonymous in (("1", True), ("true", True), ("0", False)):
        emulator = PRODUCTION | {"JAM_BQ_API_ENDPOINT": "http://127.0.0.1:9050", "JAM_BQ_ANONYMOUS": value}
        client = load(emulator).resources["table_io_manager"].warehouse.bigquery
        assert client.anonymous == dg.EnvVar.int("JAM_BQ_ANONYMOUS")  # read where the run executes
        assert as_run_sees_it(client, emulator, monkeypatch).anonymous is anonymous, value
    with pytest.raises(SettingsError, match="JAM_BQ_ANONYMOUS=1 is for an emulator: set JAM_BQ_API_ENDPOINT"):
        load(PRODUCTION | {"JAM_BQ_ANONYMOUS": "1"})
    # Dagster would read "no" as on: refused when the code location loads.
    with pytest.raises(SettingsError, match="^JAM_BQ_ANONYMOUS='no' must be 1 or 0$"):
        load(PRODUCTION | {"JAM_BQ_ANONYMOUS": "no"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JAM_GRACE_SECONDS", "ten", "JAM_GRACE_SECONDS='ten' must be a whole number of seconds"),
        ("JAM_CORE_WORKERS", "0", "JAM_CORE_WORKERS='0' must be a whole number of processes, at least 1"),
        (
            "JAM_TEAM_ALIASES",
            "JAMDUNA",
            "JAM_TEAM_ALIASES: 'JAMDUNA' is not NAME=Alias (pairs are separated by commas)",
        ),
        ("DAGSTER_DEPLOYMENT", "prod", "DAGSTER_DEPLOYMENT='prod' is not one of: local, production"),
        ("JAM_BQ_MAX_BYTES_BILLED", "-1", "JAM_BQ_MAX_BYTES_BILLED='-1' must be a whole number of bytes, at least 1"),
    ],
)
def test_a_bad_value_names_its_variable(name, value, message):
    environ = PRODUCTION | {name: value} if name.startswith("JAM_BQ") else {name: value}
    with pytest.raises(SettingsError) as raised:
        resources_for(env=Env(environ))
    assert str(raised.value) == message


def test_elapsed_bands_are_overridden_per_table_with_the_cores_fields():
    from jam_assets.core.quality import DEFAULT_ELAPSED_BANDS, ElapsedBand
    from jam_assets.defs.settings import JamSettings

    custom = JamSettings(elapsed_bands={"tickets": {"low": 5, "high": 9, "ms_below": 5, "ns_above": 9}})
    bounds = custom.quality_bounds()
    assert bounds.elapsed["tickets"] == ElapsedBand(low=5, high=9, ms_below=5, ns_above=9)
    assert bounds.elapsed["blocks"] == DEFAULT_ELAPSED_BANDS["blocks"]
    with pytest.raises(SettingsError, match=r"elapsed_bands\['tickets'\]: .*unexpected keyword argument 'hi'"):
        JamSettings(elapsed_bands={"tickets": {"hi": 9}}).quality_bounds()


def test_production_tables_carry_a_freshness_policy_and_local_ones_none():
    """A stalled receiver or sensor shows in the UI: a table with no new minute file for 5 minutes is a
    warning, for 15 a failure (production only: the bundled samples are from 2025)."""
    for environ, expected in ((PRODUCTION, (900, 300)), ({}, None)):
        specs = {s.key.path[-1]: s for s in load(environ).resolve_all_asset_specs()}
        for table in ("blocks", "rejected_lines", "tickets"):
            policy = specs[table].freshness_policy
            got = (
                None
                if policy is None
                else (policy.fail_window.to_timedelta().seconds, policy.warn_window.to_timedelta().seconds)
            )
            assert got == expected, (table, environ)
        assert specs["raw_log"].freshness_policy is None


def test_dune_tables_are_public_only_when_asked_and_the_plan_is_set_by_variables(monkeypatch):
    dune = PRODUCTION | {"DUNE_API_KEY": "k", "DUNE_NAMESPACE": "jamteam"}
    default = as_run_sees_it(load(dune).resources["dune"], dune, monkeypatch)
    assert (default.public_tables, default.max_requests_per_minute, default.storage_cap_bytes) == (
        False,
        12,
        100_000_000,
    )
    plus = dune | {
        "JAM_DUNE_PUBLIC": "1",
        "JAM_DUNE_REQUESTS_PER_MINUTE": "70",
        "JAM_DUNE_STORAGE_CAP_BYTES": "15000000000",
    }
    configured = load(plus).resources["dune"]
    assert configured.storage_cap_bytes == dg.EnvVar.int("JAM_DUNE_STORAGE_CAP_BYTES")
    resolved = as_run_sees_it(configured, plus, monkeypatch)
    assert (resolved.public_tables, resolved.max_requests_per_minute, resolved.storage_cap_bytes) == (
        True,
        70,
        15_000_000_000,
    )
    assert resolved.config().max_requests_per_minute == 70
    with pytest.raises(
        SettingsError, match="^JAM_DUNE_REQUESTS_PER_MINUTE='0' must be a whole number of requests, at least 1$"
    ):
        load(dune | {"JAM_DUNE_REQUESTS_PER_MINUTE": "0"})


def test_the_tables_outputs_say_dune_holds_their_rows_only_where_dune_is_configured():
    dune = {"DUNE_API_KEY": "k", "DUNE_NAMESPACE": "jamteam"}
    assert load(PRODUCTION | dune).resources["table_io_manager"].dune is True
    assert load(PRODUCTION).resources["table_io_manager"].dune is False
    assert load({}).resources["table_io_manager"].dune is False


@pytest.mark.parametrize("environ", [{}, PRODUCTION], ids=["local", "production"])
def test_every_asset_carries_its_owner_columns_code_reference_and_a_plain_description(environ):
    """What the UI's asset pages show an operator, for every asset of the code location."""
    from jam_assets.core import schema

    defs = load(environ)
    specs = {s.key.path[-1]: s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {schema.RAW_LOG, *schema.ALL_TABLES, *schema.DAY_TABLES}
    warehouse = "bigquery" if environ else "duckdb"
    for name, spec in specs.items():
        assert spec.owners == ["team:jam-telemetry"], name
        assert spec.description and not spec.description[:1].isdigit(), name  # no "01." numbering
        (reference,) = spec.metadata["dagster/code_references"].code_references
        assert reference.file_path.endswith(("defs/assets.py", "defs/reports.py")), name
        if name != schema.RAW_LOG:
            columns = [c.name for c in spec.metadata["dagster/column_schema"].columns]
            assert columns == [c.name for c in schema.columns(name)], name
            assert warehouse in spec.kinds, name
