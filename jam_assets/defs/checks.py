"""Asset checks: the specs on the table step, and the translation of core outcomes into results.

They run in the same step right after the outputs are published, for one minute file or a range,
and are partitioned like the tables: a result belongs to a minute file. With only checks selected
(the UI's Execute on a check, for a chosen minute file), the step re-reads the minute files to
rebuild what only the raw envelopes hold and reads the exports as they are.
"""

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from .._dagster_compat import check_target
from ..core import quality, schema
from ..core.transform import MinuteFileSummary
from .partitions import minute_files
from .settings import JamSettings

RAW_LOG = schema.RAW_LOG
LINES_ACCOUNTED = "lines_accounted"
CODEC_LEN = "codec_len_matches"
PREIMAGE_HASH = "preimage_hash_matches_h"
HEX_FORMATS = "hex_formats"
ELAPSED_UNITS = "elapsed_units"
TIME_IN_WINDOW = "time_in_window"


def _spec(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    # Partitioned checks are a "preview" in Dagster 1.13 (public API, tested here at the pinned and
    # the newest 1.13 patch); the warning would be printed by every process that loads the code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=minute_files
        )


CHECK_SPECS = [
    # On rejected_lines, not raw_log: raw_log can be materialized alone (the tables follow in
    # their own run, by automation), and the accounting is over what the tables hold.
    _spec(
        LINES_ACCOUNTED,
        schema.REJECTED,
        "Lines that gave rows + rejected lines = lines in the file, counted in the exports.",
        blocking=True,
    ),
    _spec(CODEC_LEN, RAW_LOG, "codec_encoded has exactly metadata codec_len bytes wherever both exist."),
    _spec(
        PREIMAGE_HASH,
        "preimages",
        "preimage_hash (BLAKE2b-256 of the blob) equals metadata h wherever the line has one.",
    ),
    *[
        spec
        for table in schema.TABLES
        for spec in (
            _spec(
                HEX_FORMATS,
                table,
                "Hashes, keys, signatures and blobs match FORMAT.md 6; REQUIRED columns are not null.",
            ),
            _spec(
                ELAPSED_UNITS, table, "elapsed per team: count, median, range; flags values that look like ns or ms."
            ),
            _spec(
                TIME_IN_WINDOW,
                table,
                "Each row's time lies within its minute file's minute, give or take the tolerance.",
            ),
        )
    ],
]


def _metadata(outcome: quality.Outcome) -> dict[str, Any]:
    meta: dict[str, object] = {"headline": outcome.headline, "failing_rows": outcome.failing}
    if outcome.by_minute:
        meta["failing_minute_files"] = dg.MetadataValue.json(dict(sorted(outcome.by_minute.items())))
    if outcome.samples:
        meta["samples"] = dg.MetadataValue.json(outcome.samples)
    per_team = outcome.extra.get("per_team")
    if per_team is not None:
        lines = ["| team | values | median µs | min µs | max µs |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {r['team']} | {r['values']} | {r['median_us']:,} | {r['min_us']:,} | {r['max_us']:,} |"
            for r in per_team
        ]
        meta["per_team"] = dg.MetadataValue.md("\n".join(lines))
        meta["per_team_json"] = dg.MetadataValue.json(per_team)
    for key, value in outcome.extra.items():
        if key != "per_team":
            meta[key] = dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
    return meta


def evaluate(
    check: dg.AssetCheckKey, exports: quality.Exports, summaries: Mapping[str, MinuteFileSummary], settings: JamSettings
) -> quality.Outcome:
    table, name = check.asset_key.path[-1], check.name
    bounds = settings.quality_bounds()
    if name == LINES_ACCOUNTED:
        return quality.check_lines_accounted(exports, summaries)
    if name == CODEC_LEN:
        return quality.check_codec_len(summaries)
    if name == PREIMAGE_HASH:
        return quality.check_preimage_hash(summaries)
    if name == HEX_FORMATS:
        return quality.check_hex_formats(exports, table)
    if name == ELAPSED_UNITS:
        return quality.check_elapsed(exports, table, bounds.elapsed[table])
    if name == TIME_IN_WINDOW:
        return quality.check_time_window(exports, table, bounds.time_tolerance_seconds)
    raise KeyError(f"no such check: {check.to_user_string()}")


def _severity(outcome: quality.Outcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if outcome.severity == "WARN" else dg.AssetCheckSeverity.ERROR


def _latest_materializations(
    context: dg.AssetExecutionContext, assets: set[dg.AssetKey], keys: list[str]
) -> dict[tuple[dg.AssetKey, str], dg.EventLogRecord]:
    """(asset, minute file) -> its latest materialization (this run's, unless the run checks alone):
    what each check evaluation judged. From the instance's asset index, whose storage ids the UI
    follows (a run's own records number differently)."""
    out: dict[tuple[dg.AssetKey, str], dg.EventLogRecord] = {}
    for asset in assets:
        records_filter = dg.AssetRecordsFilter(asset_key=asset, asset_partitions=keys)
        cursor = None
        while True:
            page = context.instance.fetch_materializations(records_filter, limit=10_000, cursor=cursor)
            for record in page.records:
                if record.partition_key is not None:
                    out.setdefault((asset, record.partition_key), record)  # newest first
            if not page.has_more:
                break
            cursor = page.cursor
    return out


def _minute_evaluation(
    check: dg.AssetCheckKey,
    outcome: quality.Outcome,
    key: str,
    of: int,
    blocking: bool,
    target: dg.EventLogRecord | None,
) -> dg.AssetCheckEvaluation:
    """One minute file's evaluation in a range run of `of` minute files: its own figures and samples."""
    failing = outcome.by_minute.get(key, 0)
    others = f"{of - 1:,} other minute file{'s' * (of != 2)}"
    meta: dict[str, Any] = {"failing_rows": failing}
    if failing:
        headline = f"{key}: {failing:,} failing" + (
            f" (checked with {others}: {outcome.headline})" if of > 1 else f": {outcome.headline}"
        )
        meta["headline"] = headline
        if samples := outcome.samples_by_minute.get(key):
            meta["samples"] = dg.MetadataValue.json(samples)
    elif of == 1:
        headline = outcome.headline
    elif outcome.passed:  # kept short: a day's range run stores 51,840 of these
        headline = f"passed (checked with {others}: {outcome.headline})"
    else:
        headline = f"passed (checked with {others}, of which {len(outcome.by_minute):,} failed)"
    return dg.AssetCheckEvaluation(
        asset_key=check.asset_key,
        check_name=check.name,
        passed=not failing,
        partition=key,
        severity=_severity(outcome),
        metadata=meta,
        description=headline,
        target_materialization_data=check_target(target) if target is not None else None,
        blocking=blocking,
    )


def check_results(
    context: dg.AssetExecutionContext, settings: JamSettings, summaries: Mapping[str, MinuteFileSummary]
) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """The selected checks' results, recorded per minute file (the checks are partitioned like the tables).

    A run over one minute file (the sensor's usual run) gives every check an AssetCheckResult, which
    Dagster records on that minute. A range run (a backfill, `jam-etl run`) is checked as a whole (one
    query per check over all its exports), then every check's result is recorded on each minute file
    with that minute's own figures and samples (AssetCheckResult cannot name a partition), so a bad
    minute stays in view whatever its neighbours did. A run of checks alone without a partition (the
    UI's "Execute all") checks the newest minute file the same way. A failed blocking check (ERROR)
    fails the step.
    """
    selected = sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    if not selected:
        return
    exports = quality.Exports(
        settings.export_root, sorted(summaries), spill_dir=settings.staging_dir(context.run_id) / "checks"
    )
    try:
        outcomes = [(check, evaluate(check, exports, summaries, settings)) for check in selected]
    finally:
        exports.close()
    if context.has_partition_key:
        for check, outcome in outcomes:
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=check.name,
                passed=outcome.passed,
                severity=_severity(outcome),
                metadata=_metadata(outcome),
                description=outcome.headline,
            )
        return
    blocking = {s.key for s in CHECK_SPECS if s.blocking}
    keys = sorted(summaries)
    targets = _latest_materializations(context, {check.asset_key for check, _ in outcomes}, keys)
    blocked = []
    for check, outcome in outcomes:
        for key in keys:
            yield _minute_evaluation(
                check, outcome, key, len(keys), check in blocking, targets.get((check.asset_key, key))
            )
        if check in blocking and not outcome.passed and outcome.severity == "ERROR":
            blocked.append(f"{check.to_user_string()}: {outcome.headline}")
    if blocked:
        raise dg.Failure(description="blocking check failed: " + "; ".join(blocked), allow_retries=False)
