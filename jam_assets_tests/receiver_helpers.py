"""The receiver as a subprocess on free loopback ports, and ways to talk to it and read what it wrote.

    with running_receiver(tmp_path / "logs") as rx:
        rx.post([b'{"a": 1}'])            # -> {"stored": 1, "refused": 0}
        send_syslog(rx.ports["syslog"], b"<14>jamtart: x\\n")
        assert minute_lines(rx.log_dir) == [b'{"a": 1}', b"x"]

`running_receiver` starts `python -m jam_assets.receiver` with every port 0 (the receiver picks free
ones and writes them to a ready file), waits for /healthz, and stops it with SIGTERM afterwards
(checking that it exits 0 unless told otherwise). The lead's end-to-end test can start it beside
`dagster dev` the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


@dataclass
class RunningReceiver:
    proc: subprocess.Popen
    log_dir: Path
    ports: dict[str, int]
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str, listener: str = "http") -> str:
        return f"http://{LOOPBACK}:{self.ports[listener]}{path}"

    def request(self, method: str, path: str, body=None, headers=None, listener: str = "http", timeout: float = 60):
        conn = http.client.HTTPConnection(LOOPBACK, self.ports[listener], timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, lines: list[bytes] | bytes, expect_status: int = 200) -> dict:
        """POSTs lines (LF-terminated) or a raw body to /v1/telemetry; returns the JSON reply."""
        body = lines if isinstance(lines, bytes) else b"".join(line + b"\n" for line in lines)
        status, reply = self.request("POST", "/v1/telemetry", body, {"Content-Type": "application/x-ndjson"})
        assert status == expect_status, (status, reply)
        return json.loads(reply)

    def metrics(self) -> dict[str, float]:
        """`/metrics` as {'name{labels}': value}."""
        status, text = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"receiver did not stop within {timeout} s after signal {sig}") from None


def receiver_env(log_dir: Path, ready_file: Path, **settings: str | int | float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAM_RECEIVER_")}
    env.update(
        JAM_LOG_DIR=str(log_dir),
        JAM_RECEIVER_HOST=LOOPBACK,
        JAM_RECEIVER_SYSLOG_PORT="0",
        JAM_RECEIVER_HTTP_PORT="0",
        JAM_RECEIVER_WS_PORT="0",
        JAM_RECEIVER_READY_FILE=str(ready_file),
        PYTHONUNBUFFERED="1",
    )
    env.update({f"JAM_RECEIVER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_receiver(log_dir: Path, workdir: Path | None = None, **settings) -> RunningReceiver:
    """Starts the receiver and waits until every listener answers; `settings` become JAM_RECEIVER_* variables."""
    workdir = workdir or log_dir.parent
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"receiver-ready-{time.monotonic_ns()}.json"
    stderr_path = ready.with_suffix(".log")
    env = receiver_env(log_dir, ready, **settings)
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jam_assets.receiver"],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited with {proc.returncode}: {stderr_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"receiver did not start: {stderr_path.read_text()}")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    rx = RunningReceiver(proc, log_dir, {k: v for k, v in info.items() if k != "pid"}, stderr_path, env)
    if "http" in rx.ports:
        status, _ = rx.request("GET", "/healthz")
        assert status == 200
    return rx


@contextmanager
def running_receiver(log_dir: Path, expect_exit: int | None = 0, **settings) -> Iterator[RunningReceiver]:
    rx = start_receiver(log_dir, **settings)
    try:
        yield rx
    finally:
        code = rx.stop()
        if expect_exit is not None:
            assert code == expect_exit, f"receiver exited with {code}:\n{rx.log_text()}"


def send_syslog(port: int, data: bytes, linger: float = 0.0) -> None:
    """Sends raw bytes on one TCP connection and closes it cleanly (FIN)."""
    with socket.create_connection((LOOPBACK, port)) as s:
        s.sendall(data)
        if linger:
            time.sleep(linger)


def octet_frame(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


def minute_files(root: Path) -> dict[str, bytes]:
    """Every minute file under root: {key: content}."""
    return {str(p.relative_to(root))[:-4]: p.read_bytes() for p in sorted(root.glob("[0-9]*/[0-9]*/[0-9]*/[0-9]*.log"))}


def minute_lines(root: Path) -> list[bytes]:
    """All lines of all minute files in key order (each file must end in LF)."""
    lines: list[bytes] = []
    for key, data in minute_files(root).items():
        assert not data or data.endswith(b"\n"), f"{key} ends in a partial line"
        lines.extend(data.split(b"\n")[:-1])
    return lines


def wait_for(predicate, timeout: float = 10, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
