"""jam-etl on Dagster: JAM telemetry minute files turned into Dune/BigQuery tables."""
