"""Resources per deployment, chosen by one helper. The keys are the same in every environment.

- `local` (default): JSONL exports + DuckDB.
- `production`: JSONL exports + BigQuery (see `io_bigquery.py`).
"""

from __future__ import annotations

import os

from dagster_duckdb import DuckDBResource

from .io_managers import DuckDBTablesIOManager
from .settings import JamSettings, SettingsError, settings_from_env

DEPLOYMENTS = ("local", "production")


def deployment_name() -> str:
    name = os.environ.get("DAGSTER_DEPLOYMENT", "local") or "local"
    if name not in DEPLOYMENTS:
        raise SettingsError(f"DAGSTER_DEPLOYMENT={name!r} is not one of: {', '.join(DEPLOYMENTS)}")
    return name


def local_resources(settings: JamSettings) -> dict[str, object]:
    settings.export_root.mkdir(parents=True, exist_ok=True)
    return {
        "settings": settings,
        "table_io_manager": DuckDBTablesIOManager(
            settings=settings, duckdb=DuckDBResource(database=str(settings.duckdb_path))
        ),
    }


def resources_for(deployment: str | None = None, settings: JamSettings | None = None) -> dict[str, object]:
    deployment = deployment or deployment_name()
    settings = settings or settings_from_env()
    if deployment == "production":
        from .io_bigquery import production_resources

        return production_resources(settings)
    return local_resources(settings)
