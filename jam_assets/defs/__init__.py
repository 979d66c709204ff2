"""The Dagster wiring: partitions, assets, IO managers, checks, sensor, resources. Thin by design:
the work happens in `jam_assets.core`."""
