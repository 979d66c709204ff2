"""Resources per deployment, chosen by one helper. The keys are the same in every environment.

- `local` (default): JSONL exports + DuckDB.
- `production`: JSONL exports + BigQuery (+ Dune when DUNE_API_KEY is set).

The environment is read here and in `settings.py`, once, when the code location loads; every value
reaches the resources as a `dg.EnvVar`, so the UI shows variable names, never values.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ..sinks.bigquery import PARTITION_TYPES
from .alerts import AlertWebhook
from .dune import DuneResource
from .io_managers import DayTablesIOManager, TablesIOManager
from .settings import Env, JamSettings, SettingsError, settings_from_env
from .warehouses import BigQueryWarehouse, DuckDBWarehouse, JamBigQueryResource

DEPLOYMENTS = ("local", "production")


def deployment_name(env: Env | None = None) -> str:
    name = (env or Env()).text("DAGSTER_DEPLOYMENT") or "local"
    if name not in DEPLOYMENTS:
        raise SettingsError(f"DAGSTER_DEPLOYMENT={name!r} is not one of: {', '.join(DEPLOYMENTS)}")
    return name


def with_warehouse(settings: JamSettings, warehouse, dune: bool = False) -> dict[str, object]:
    """The resources every deployment has: the settings, the warehouse and the two IO managers over it."""
    return {
        "settings": settings,
        "warehouse": warehouse,
        "table_io_manager": TablesIOManager(settings=settings, warehouse=warehouse, dune=dune),
        "day_io_manager": DayTablesIOManager(settings=settings, warehouse=warehouse),
    }


def local_resources(settings: JamSettings) -> dict[str, object]:
    return with_warehouse(settings, DuckDBWarehouse(settings=settings))


def whole_fields(env: Env, resource: type[dg.ConfigurableResource], **fields: tuple[str, int, str]) -> dict[str, Any]:
    """field=(variable, minimum, unit) -> the field's value: the variable when set (checked), else the
    field's own default."""
    return {
        field: env.whole(variable, resource.model_fields[field].default, minimum=minimum, unit=unit)
        for field, (variable, minimum, unit) in fields.items()
    }


def bigquery_warehouse(env: Env) -> BigQueryWarehouse:
    """BigQuery from JAM_BQ_*; credentials from JAM_BQ_CREDENTIALS_B64 or application-default credentials."""
    if env.is_set("JAM_BQ_CREDENTIALS_B64") and env.is_set("GOOGLE_APPLICATION_CREDENTIALS"):
        raise SettingsError(
            "both JAM_BQ_CREDENTIALS_B64 and GOOGLE_APPLICATION_CREDENTIALS are set: set one. "
            "JAM_BQ_CREDENTIALS_B64 is the key itself, base64-encoded; GOOGLE_APPLICATION_CREDENTIALS is the path "
            "of a key file (application-default credentials)."
        )
    if env.is_on("JAM_BQ_ANONYMOUS") and not env.is_set("JAM_BQ_API_ENDPOINT"):
        raise SettingsError("JAM_BQ_ANONYMOUS=1 is for an emulator: set JAM_BQ_API_ENDPOINT to its address too")
    client = JamBigQueryResource(
        project=env.required("JAM_BQ_PROJECT", "it is the GCP project that holds the dataset"),
        location=env.optional("JAM_BQ_LOCATION"),
        gcp_credentials=env.optional("JAM_BQ_CREDENTIALS_B64"),
        api_endpoint=env.optional("JAM_BQ_API_ENDPOINT"),
        anonymous=env.flag("JAM_BQ_ANONYMOUS"),
    )
    return BigQueryWarehouse(
        bigquery=client,
        dataset=env.required(
            "JAM_BQ_DATASET", "it names the dataset the tables go to (create it first: bq mk --dataset)"
        ),
        **whole_fields(
            env,
            BigQueryWarehouse,
            maximum_bytes_billed=("JAM_BQ_MAX_BYTES_BILLED", 1, "a whole number of bytes"),
            job_timeout_seconds=("JAM_BQ_JOB_TIMEOUT_SECONDS", 1, "a whole number of seconds"),
            retry_seconds=("JAM_BQ_RETRY_SECONDS", 0, "a whole number of seconds"),
        ),
        partition_type=env.choice("JAM_BQ_PARTITION", PARTITION_TYPES),
    )


def dune_resource(env: Env) -> DuneResource | None:
    """Dune, when DUNE_API_KEY is set; its namespace must be given (there is no default)."""
    if not env.is_set("DUNE_API_KEY"):
        return None
    return DuneResource(
        api_key=env.required("DUNE_API_KEY", "it is the Dune API key"),
        namespace=env.required(
            "DUNE_NAMESPACE", "DUNE_API_KEY is set, and the tables need your Dune user or team handle"
        ),
        public_tables=env.flag("JAM_DUNE_PUBLIC"),
        **whole_fields(
            env,
            DuneResource,
            max_requests_per_minute=("JAM_DUNE_REQUESTS_PER_MINUTE", 1, "a whole number of requests"),
            storage_cap_bytes=("JAM_DUNE_STORAGE_CAP_BYTES", 1, "a whole number of bytes"),
        ),
    )


def production_resources(settings: JamSettings, env: Env | None = None) -> dict[str, object]:
    env = env or Env()
    dune = dune_resource(env)
    resources = with_warehouse(settings, bigquery_warehouse(env), dune=dune is not None)
    if dune is not None:
        resources["dune"] = dune
    return resources


def resources_for(
    deployment: str | None = None, settings: JamSettings | None = None, env: Env | None = None
) -> dict[str, object]:
    env = env or Env()
    deployment = deployment or deployment_name(env)
    production = deployment == "production"
    settings = settings or settings_from_env(env, production=production)
    resources = production_resources(settings, env) if production else local_resources(settings)
    if env.is_set("JAM_ALERT_WEBHOOK"):
        resources["alerts"] = AlertWebhook(url=env.required("JAM_ALERT_WEBHOOK", "it is the webhook"))
    return resources
