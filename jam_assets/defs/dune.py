"""Dune in Dagster: the resource, the hourly upload op, its job and schedule.

The upload itself (client, ledger, what to send, the dedup view) is `jam_assets.sinks.dune`.
"""

from dataclasses import fields

import dagster as dg

from ..sinks.dune import DuneConfig, upload
from .settings import JamSettings


class DuneResource(dg.ConfigurableResource):
    """Dune's uploads API. `api_key` should always be `dg.EnvVar("DUNE_API_KEY")`."""

    api_key: str
    namespace: str
    base_url: str = DuneConfig.base_url
    table_prefix: str = DuneConfig.table_prefix
    # Dune's write endpoints allow 15 requests a minute on Free, 70 on Plus (JAM_DUNE_REQUESTS_PER_MINUTE).
    max_requests_per_minute: int = int(DuneConfig.max_requests_per_minute)
    # Dune takes at most 1.2 GB a request; a larger export is split at line boundaries.
    max_request_bytes: int = DuneConfig.max_request_bytes
    include_codec_encoded: bool = DuneConfig.include_codec_encoded
    max_retries: int = DuneConfig.max_retries
    backoff_seconds: float = DuneConfig.backoff_seconds
    timeout_seconds: float = DuneConfig.timeout_seconds
    # Tables are created private; True creates them public (a plan without private tables needs it).
    public_tables: bool = DuneConfig.public_tables
    # The plan's storage cap (Free 100 MB, Analyst 1 GB, Plus 15 GB; JAM_DUNE_STORAGE_CAP_BYTES); a warning is logged once the
    # bytes uploaded reach `storage_warn_fraction` of it.
    storage_cap_bytes: int = DuneConfig.storage_cap_bytes
    storage_warn_fraction: float = DuneConfig.storage_warn_fraction
    # How long a run waits for an overlapping one to finish before it skips.
    lock_wait_seconds: float = DuneConfig.lock_wait_seconds

    def config(self) -> DuneConfig:
        return DuneConfig(**{f.name: getattr(self, f.name) for f in fields(DuneConfig)})


@dg.op(description="Upload settled, exported minute files to Dune (batched, ledgered, one table's failure isolated).")
def dune_upload(context: dg.OpExecutionContext, settings: JamSettings, dune: DuneResource) -> dict:
    report = upload(settings.export_root, dune.config(), context.log, settle_seconds=settings.watch_seconds)
    metadata = {
        "uploaded_at": report.uploaded_at or "",
        "rows_by_table": {t: r.rows for t, r in report.tables.items() if r.files},
        "bytes_by_table": {t: r.bytes for t, r in report.tables.items() if r.files},
        "files_by_table": {t: r.files for t, r in report.tables.items() if r.files},
        "tables_created": report.created,
        "tables_failed": report.failed,
        "requests": report.requests,
        "storage_bytes_estimate": report.storage_bytes,
    }
    if report.skipped:
        metadata["skipped"] = report.skipped
    if report.failed:
        raise dg.Failure(description=report.failure_message(), metadata=metadata)
    context.add_output_metadata(metadata)
    return {t: r.rows for t, r in report.tables.items() if r.files}


@dg.job(description="Hourly Dune upload of the JSONL exports (see jam_assets/sinks/dune.py).")
def dune_upload_job():
    dune_upload()


def dune_schedule(running: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="hourly_dune_upload",
        job=dune_upload_job,
        cron_schedule="7 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
