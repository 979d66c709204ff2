"""Counters for `/metrics` (Prometheus text format 0.0.4); plain dicts, the receiver is one event loop."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

LISTENERS = ("syslog", "http", "ws")
# Why a message was not stored (jam_receiver_refused_total's reason label).
REASONS = {
    "program": "syslog message whose program name is not the configured one (or that cannot be parsed)",
    "too_large": "message over JAM_RECEIVER_MAX_MESSAGE_BYTES, refused whole",
    "bad_frame": "octet-counted frame whose header is invalid or whose count does not match; connection closed",
    "incomplete": "message cut short by the sender's disconnect, not stored",
    "timeout": "message not completed within JAM_RECEIVER_MESSAGE_SECONDS (slow sender); connection closed",
    "disk_full": "the disk refused the write (no space or quota)",
    "write_error": "the disk refused the write for another reason",
    "shutdown": "message still incomplete when the receiver stopped",
    "max_connections": "connection refused: JAM_RECEIVER_MAX_CONNECTIONS reached (counts connections)",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.received_bytes: dict[str, int] = defaultdict(int)
        self.messages: dict[str, int] = defaultdict(int)
        self.stored_lines: dict[str, int] = defaultdict(int)
        self.stored_bytes: dict[str, int] = defaultdict(int)
        self.refused: dict[tuple[str, str], int] = defaultdict(int)
        self.open_connections: dict[str, int] = defaultdict(int)
        self.connections: dict[str, int] = defaultdict(int)

    def refuse(self, listener: str, reason: str, count: int = 1) -> None:
        if count:
            self.refused[listener, reason] += count
            if reason != "max_connections":
                self.messages[listener] += count

    def render(self, log_dir: Path, current_key: str) -> bytes:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(
                f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                for labels, value in samples
            )

        def per_listener(values: dict[str, int]) -> list[tuple[str, float]]:
            return [(f'{{listener="{name}"}}', values.get(name, 0)) for name in LISTENERS]

        family(
            "jam_receiver_received_bytes_total",
            "counter",
            "Bytes read from the network, per listener.",
            per_listener(self.received_bytes),
        )
        family(
            "jam_receiver_messages_total",
            "counter",
            "Messages received (stored or refused), per listener.",
            per_listener(self.messages),
        )
        family(
            "jam_receiver_lines_total",
            "counter",
            "Lines stored in minute files, per listener.",
            per_listener(self.stored_lines),
        )
        family(
            "jam_receiver_line_bytes_total",
            "counter",
            "Bytes stored in minute files (with the LF), per listener.",
            per_listener(self.stored_bytes),
        )
        family(
            "jam_receiver_refused_total",
            "counter",
            "Messages (or connections) not stored, per listener and reason.",
            [
                (f'{{listener="{listener}",reason="{reason}"}}', self.refused.get((listener, reason), 0))
                for listener in LISTENERS
                for reason in REASONS
            ],
        )
        family(
            "jam_receiver_open_connections",
            "gauge",
            "Connections open now, per listener.",
            per_listener(self.open_connections),
        )
        family(
            "jam_receiver_connections_total",
            "counter",
            "Connections accepted, per listener.",
            per_listener(self.connections),
        )
        path = log_dir / f"{current_key}.log" if current_key else None
        file_samples: list[tuple[str, float]] = []
        if path is not None:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            file_samples = [(f'{{key="{current_key}",path="{_escape(str(path))}"}}', size)]
        family("jam_receiver_current_file_bytes", "gauge", "Size of the newest minute file written to.", file_samples)
        try:
            st = os.statvfs(log_dir)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = 0
        family("jam_receiver_disk_free_bytes", "gauge", "Free space for the receiver on the log disk.", [("", free)])
        family(
            "jam_receiver_start_time_seconds",
            "gauge",
            "When the receiver started (Unix time).",
            [("", float(int(self.started)))],
        )
        return ("\n".join(out) + "\n").encode()
