"""The telemetry receiver: nodes send, minute files appear.

Syslog over TCP (what jam-etl's syslog-ng took), HTTP POSTs of newline-delimited JSON and WebSocket
messages, each appended as one line to `<JAM_LOG_DIR>/YYYY/MM/DD/HHMM.log`, byte for byte what
syslog-ng writes with jam-etl's configuration. `python -m jam_assets.receiver` runs it; see
`config.py` for the settings.
"""

from .server import main

__all__ = ["main"]
