"""The implementer leaderboard and the per-team quality report: per UTC day, computed in the warehouse.

A day is the UTC day of the rows' `minute_start`: it depends on exactly that day's minute files,
whatever the rows' `time` says. Both tables are computed by SQL that DuckDB and BigQuery run alike
(`compute.py`), from the minute-file tables, reading only the requested days' rows; the same rows
give the same numbers in both. Then they are shown: a self-contained HTML page and a Markdown
table and SVG chart for the Dagster UI (`page.py`), a plain-text table for the terminal
(`terminal.py`). Nothing here imports Dagster.

Contract: schema/leaderboard.json and schema/quality_report.json.
"""
