from collections.abc import Mapping

import dagster as dg

# One partition per minute file, keyed by its path under the log root without `.log`
# (`YYYY/MM/DD/HHMM`). Keys are registered by the sensor or `jam-etl run`, always in sorted order,
# because a partition range means "every key registered between these two".
MINUTE_FILES = "minute_files"
minute_files = dg.DynamicPartitionsDefinition(name=MINUTE_FILES)

# Backfills in runs of a day of minute files (1,440), not one run per file: each run's cost is
# mostly per run (a process, loading the code, bookkeeping), and a run's memory, planned events and
# check work stay bounded however much history a backfill covers (60 days: 60 runs, one at a time
# under the warehouse pool).
MINUTE_FILES_PER_RUN = 1440
backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=MINUTE_FILES_PER_RUN)


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover every minute_files key registered from `first` to `last`."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def describe_partitions(tags: Mapping[str, str]) -> str:
    """The minute file(s) a run covers, from its tags: `K`, `A ... B`, or '' for a run without partitions."""
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return start if start == end else f"{start} ... {end}"
    return tags.get("dagster/partition", "")
