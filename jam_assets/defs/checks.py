"""Asset checks: the specs on the table step, and the translation of core outcomes into results.

They run in the same step right after the outputs are published, for one minute file or a range.
With only checks selected, the step re-reads the minute files to rebuild what only the raw
envelopes hold and reads the exports as they are (Dagster 1.13 does not yet launch such a
check-only run for one partition of a partitioned multi-asset; re-materializing is idempotent).
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from ..core import quality, schema
from ..core.transform import MinuteFileSummary
from .settings import JamSettings

RAW_LOG = schema.RAW_LOG
LINES_ACCOUNTED = "lines_accounted"
CODEC_LEN = "codec_len_matches"
PREIMAGE_HASH = "preimage_hash_matches_h"
HEX_FORMATS = "hex_formats"
ELAPSED_UNITS = "elapsed_units"
TIME_IN_WINDOW = "time_in_window"

CHECK_SPECS = [
    # On rejected_lines, not raw_log: raw_log can be materialized alone (the tables follow in
    # their own run, by automation), and the accounting is over what the tables hold.
    dg.AssetCheckSpec(
        LINES_ACCOUNTED,
        asset=schema.REJECTED,
        blocking=True,
        description="Lines that gave rows + rejected lines = lines in the file, counted in the exports.",
    ),
    dg.AssetCheckSpec(
        CODEC_LEN, asset=RAW_LOG, description="codec_encoded has exactly metadata codec_len bytes wherever both exist."
    ),
    dg.AssetCheckSpec(
        PREIMAGE_HASH,
        asset="preimages",
        description="preimage_hash (BLAKE2b-256 of the blob) equals metadata h wherever the line has one.",
    ),
    *[
        spec
        for table in schema.TABLES
        for spec in (
            dg.AssetCheckSpec(
                HEX_FORMATS,
                asset=table,
                description="Hashes, keys, signatures and blobs match FORMAT.md 6; REQUIRED columns are not null.",
            ),
            dg.AssetCheckSpec(
                ELAPSED_UNITS,
                asset=table,
                description="elapsed per team: count, median, range; flags values that look like ns or ms.",
            ),
            dg.AssetCheckSpec(
                TIME_IN_WINDOW,
                asset=table,
                description="Each row's time lies within its minute file's minute, give or take the tolerance.",
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


def check_results(
    context: dg.AssetExecutionContext, settings: JamSettings, summaries: Mapping[str, MinuteFileSummary]
) -> Iterator[dg.AssetCheckResult]:
    selected = sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    if not selected:
        return
    exports = quality.Exports(
        settings.export_root, sorted(summaries), spill_dir=settings.staging_dir(context.run_id) / "checks"
    )
    try:
        for check in selected:
            outcome = evaluate(check, exports, summaries, settings)
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=check.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.WARN if outcome.severity == "WARN" else dg.AssetCheckSeverity.ERROR,
                metadata=_metadata(outcome),
                description=outcome.headline,
            )
    finally:
        exports.close()
