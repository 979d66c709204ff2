import dagster as dg

from .assets import minute_file_tables
from .partitions import minute_files

minute_tables_job = dg.define_asset_job(
    "minute_tables_job",
    selection=dg.AssetSelection.assets(minute_file_tables),
    partitions_def=minute_files,
    description="raw_log and every table for the selected minute files.",
)
