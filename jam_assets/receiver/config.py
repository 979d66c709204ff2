"""The receiver's settings, from the environment like the rest of the project. Bad values stop it with
one clear message (ConfigError), never a traceback."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# syslog-ng's log_msg_size in jam-etl's configuration ("Support 12MB wps, preimages").
DEFAULT_MAX_MESSAGE_BYTES = 25_000_000

# name: (default, meaning), for the messages below and the README.
SETTINGS = {
    "JAM_LOG_DIR": (None, "the log root the minute files are written to (required)"),
    "JAM_RECEIVER_HOST": ("0.0.0.0", "address every listener binds"),
    "JAM_RECEIVER_SYSLOG_PORT": ("5000", "syslog over TCP; `off` disables it, 0 picks a free port"),
    "JAM_RECEIVER_HTTP_PORT": ("5080", "HTTP: POST /v1/telemetry, GET /metrics, GET /healthz; `off` disables"),
    "JAM_RECEIVER_WS_PORT": ("5081", "WebSocket /v1/ws (and /metrics, /healthz); `off` disables"),
    "JAM_RECEIVER_PROGRAM": ("jamtart", "syslog messages are kept when their program name starts with this"),
    "JAM_RECEIVER_MAX_MESSAGE_BYTES": (str(DEFAULT_MAX_MESSAGE_BYTES), "longer messages are refused whole"),
    "JAM_RECEIVER_MAX_CONNECTIONS": ("1000", "open connections over all listeners; more are refused"),
    "JAM_RECEIVER_IDLE_SECONDS": ("300", "a connection that sends nothing for this long is closed"),
    "JAM_RECEIVER_MESSAGE_SECONDS": ("120", "a message (or HTTP request head) must arrive whole within this"),
    "JAM_RECEIVER_SPOOL_BYTES": ("1048576", "bytes of one message held in memory; longer ones spool to disk"),
    "JAM_RECEIVER_DRAIN_SECONDS": ("10", "on SIGTERM, how long connections get to finish"),
    "JAM_RECEIVER_READY_FILE": ("", "if set, the listening ports are written there as JSON once serving"),
}


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class ReceiverConfig:
    log_dir: Path
    host: str = "0.0.0.0"
    syslog_port: int | None = 5000
    http_port: int | None = 5080
    ws_port: int | None = 5081
    program: bytes = b"jamtart"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = 1000
    idle_seconds: float = 300.0
    message_seconds: float = 120.0
    spool_bytes: int = 1 << 20
    drain_seconds: float = 10.0
    ready_file: Path | None = None


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    return value if value else (SETTINGS[name][0] or "")


def _port(env: Mapping[str, str], name: str) -> int | None:
    text = _get(env, name)
    if text.lower() == "off":
        return None
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{name}={text!r}: expected a TCP port (0-65535) or 'off'")
    return int(text)


def _number(env: Mapping[str, str], name: str, kind: type, minimum: float) -> float | int:
    text = _get(env, name)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: must be at least {minimum}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> ReceiverConfig:
    env = os.environ if env is None else env
    log_dir_text = env.get("JAM_LOG_DIR", "").strip()
    if not log_dir_text:
        raise ConfigError(
            "JAM_LOG_DIR is not set: set it to the folder the receiver writes minute files to "
            "(the pipeline reads the same folder), e.g. JAM_LOG_DIR=/var/log/jam"
        )
    log_dir = Path(log_dir_text).expanduser().resolve()
    if log_dir.exists() and not log_dir.is_dir():
        raise ConfigError(f"JAM_LOG_DIR={log_dir_text!r} exists and is not a folder")
    ports = {
        name: _port(env, name)
        for name in ("JAM_RECEIVER_SYSLOG_PORT", "JAM_RECEIVER_HTTP_PORT", "JAM_RECEIVER_WS_PORT")
    }
    if all(p is None for p in ports.values()):
        raise ConfigError("every listener is off: enable at least one of " + ", ".join(ports))
    fixed = [p for p in ports.values() if p]
    if len(fixed) != len(set(fixed)):
        raise ConfigError("two listeners share a port: " + ", ".join(f"{k}={v}" for k, v in ports.items() if v))
    program = _get(env, "JAM_RECEIVER_PROGRAM")
    if not program.isascii() or " " in program:
        raise ConfigError(f"JAM_RECEIVER_PROGRAM={program!r}: expected a syslog program name (ASCII, no spaces)")
    ready = _get(env, "JAM_RECEIVER_READY_FILE")
    return ReceiverConfig(
        log_dir=log_dir,
        host=_get(env, "JAM_RECEIVER_HOST"),
        syslog_port=ports["JAM_RECEIVER_SYSLOG_PORT"],
        http_port=ports["JAM_RECEIVER_HTTP_PORT"],
        ws_port=ports["JAM_RECEIVER_WS_PORT"],
        program=program.encode(),
        max_message_bytes=int(_number(env, "JAM_RECEIVER_MAX_MESSAGE_BYTES", int, 1)),
        max_connections=int(_number(env, "JAM_RECEIVER_MAX_CONNECTIONS", int, 1)),
        idle_seconds=float(_number(env, "JAM_RECEIVER_IDLE_SECONDS", float, 0.1)),
        message_seconds=float(_number(env, "JAM_RECEIVER_MESSAGE_SECONDS", float, 0.1)),
        spool_bytes=int(_number(env, "JAM_RECEIVER_SPOOL_BYTES", int, 65536)),
        drain_seconds=float(_number(env, "JAM_RECEIVER_DRAIN_SECONDS", float, 0)),
        ready_file=Path(ready).expanduser().resolve() if ready else None,
    )
