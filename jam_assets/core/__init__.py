"""The pure core: no Dagster here.

Parse a minute file line by line, derive the rows of every table and of `rejected_lines`,
and summarise what was seen. The Dagster wiring in `jam_assets.defs` only calls into this.
"""
