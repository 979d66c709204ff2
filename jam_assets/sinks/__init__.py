"""Dagster-free clients for the places tables go: DuckDB, BigQuery, Dune."""
