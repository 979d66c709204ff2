"""The receiver as a real process: its listeners, limits, durability, faults, load and metrics.

Every test starts `python -m jam_assets.receiver` on free loopback ports (receiver_helpers.py) and
talks to it over real sockets; what it wrote is read back from the minute files. Byte-identity with
syslog-ng is test_receiver_vs_syslog_ng.py; the parsers' unit tests are test_receiver_framing.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from jam_assets.receiver.files import MinuteFiles, WriteFailed, cut_partial_line

from .helpers import sample_line
from .receiver_helpers import (
    LOOPBACK,
    PROJECT,
    minute_files,
    minute_lines,
    octet_frame,
    receiver_env,
    running_receiver,
    send_syslog,
    start_receiver,
    wait_for,
)

pytestmark = pytest.mark.slow  # a receiver process per test: not in `make test-fast`

KB = 1024


def ws_url(rx) -> str:
    return f"ws://{LOOPBACK}:{rx.ports['ws']}/v1/ws"


def read_count(ws, want: int, timeout: float = 10) -> dict:
    """Reads the server's running counts until `stored + refused` reaches `want`."""
    deadline = time.monotonic() + timeout
    while True:
        reply = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if reply["stored"] + reply["refused"] >= want:
            return reply


def recv_all(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _run_receiver_expecting_error(env: dict) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "jam_assets.receiver"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_bad_configuration_is_one_clear_message(tmp_path):
    base = receiver_env(tmp_path / "logs", tmp_path / "ready")
    without_dir = {k: v for k, v in base.items() if k != "JAM_LOG_DIR"}
    assert "JAM_LOG_DIR is not set" in _run_receiver_expecting_error(without_dir)
    assert "JAM_RECEIVER_SYSLOG_PORT='five'" in _run_receiver_expecting_error(
        {**base, "JAM_RECEIVER_SYSLOG_PORT": "five"}
    )
    off = {f"JAM_RECEIVER_{n}_PORT": "off" for n in ("SYSLOG", "HTTP", "WS")}
    assert "every listener is off" in _run_receiver_expecting_error({**base, **off})
    (tmp_path / "file").write_text("")
    assert "is not a folder" in _run_receiver_expecting_error({**base, "JAM_LOG_DIR": str(tmp_path / "file")})
    assert "must be at least" in _run_receiver_expecting_error({**base, "JAM_RECEIVER_IDLE_SECONDS": "0"})
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "cannot listen" in _run_receiver_expecting_error({**base, "JAM_RECEIVER_HTTP_PORT": port})
    with running_receiver(tmp_path / "logs"):
        assert "another receiver (pid" in _run_receiver_expecting_error(
            receiver_env(tmp_path / "logs", tmp_path / "r2")
        )


def test_jam_etl_receive_runs_the_receiver(tmp_path):
    """`jam-etl receive` (what `make receive` and `JAM_RECEIVE=1 make dev` start) is the receiver: the same
    settings, a line POSTed lands in the minute file of its UTC minute of receipt, SIGTERM exits 0."""
    logs, ready = tmp_path / "logs", tmp_path / "ready.json"
    stderr_path = tmp_path / "receive.log"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jam_assets.cli", "receive"],
            cwd=PROJECT,
            env=receiver_env(logs, ready),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=30, what="jam-etl receive to listen")
        assert proc.poll() is None, stderr_path.read_text()
        ports = json.loads(ready.read_text())
        assert ports["pid"] == proc.pid and {"syslog", "http", "ws"} <= set(ports)
        before = time.strftime("%Y/%m/%d/%H%M", time.gmtime())
        conn = http.client.HTTPConnection(LOOPBACK, ports["http"], timeout=30)
        conn.request("POST", "/v1/telemetry", body=sample_line("128") + b"\n")
        assert json.loads(conn.getresponse().read()) == {"stored": 1, "refused": 0}
        conn.close()
        after = time.strftime("%Y/%m/%d/%H%M", time.gmtime())
        files = minute_files(logs)
        (key,) = files
        assert key in (before, after) and files[key] == sample_line("128") + b"\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "minute files fsynced and closed" in stderr_path.read_text()


def test_jam_etl_receive_bad_configuration_is_one_line(tmp_path):
    base = receiver_env(tmp_path / "logs", tmp_path / "ready")
    jam_etl = os.path.join(os.path.dirname(sys.executable), "jam-etl")  # the console script `make receive` runs
    for env, message in [
        (
            {k: v for k, v in base.items() if k != "JAM_LOG_DIR"},
            "JAM_LOG_DIR is not set: set it to the folder the receiver writes minute files to "
            "(the pipeline reads the same folder), e.g. JAM_LOG_DIR=/var/log/jam",
        ),
        (
            {**base, "JAM_RECEIVER_HTTP_PORT": "80800"},
            "JAM_RECEIVER_HTTP_PORT='80800': expected a TCP port (0-65535) or 'off'",
        ),
    ]:
        proc = subprocess.run([jam_etl, "receive"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=30)
        assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"jam-etl: {message}\n", "")
    assert not (tmp_path / "logs").exists()


def test_every_listener_stores_lines_and_metrics_count_them(tmp_path):
    lines = [sample_line(t) for t in ("128", "13", "255", "142")]
    with running_receiver(tmp_path / "logs") as rx:
        # syslog: newline framing, octet counting, a program that is filtered out
        send_syslog(
            rx.ports["syslog"], b"".join(b"<14>Dec  2 18:09:05 node jamtart[1]: " + line + b"\n" for line in lines)
        )
        send_syslog(rx.ports["syslog"], b"".join(octet_frame(b"<14>1 - node jamtart - - - " + line) for line in lines))
        send_syslog(rx.ports["syslog"], b"<14>other: not telemetry\n")
        # HTTP: the README's curl, a chunked body, and two requests on one kept-alive connection
        (tmp_path / "lines.ndjson").write_bytes(b"".join(line + b"\n" for line in lines))
        curl = subprocess.run(
            ["curl", "-sS", "--data-binary", f"@{tmp_path / 'lines.ndjson'}", rx.url("/v1/telemetry")],
            capture_output=True,
            check=True,
        )
        assert json.loads(curl.stdout) == {"stored": 4, "refused": 0}
        conn = http.client.HTTPConnection(LOOPBACK, rx.ports["http"], timeout=30)
        conn.request("POST", "/v1/telemetry", body=iter([lines[0] + b"\n", lines[1]]), encode_chunked=True)
        assert json.loads(conn.getresponse().read()) == {"stored": 2, "refused": 0}
        conn.request("POST", "/v1/telemetry", body=b"")
        assert json.loads(conn.getresponse().read()) == {"stored": 0, "refused": 0}
        conn.close()
        # WebSocket: text and binary messages, one count after the burst
        with ws_connect(ws_url(rx)) as ws:
            for line in lines:
                ws.send(line.decode())
            ws.send(lines[0])
            assert read_count(ws, 5) == {"stored": 5, "refused": 0}

        stored = minute_lines(rx.log_dir)
        assert sorted(stored) == sorted(lines * 4 + lines[:2] + [lines[0]])
        m = rx.metrics()
        assert m['jam_receiver_lines_total{listener="syslog"}'] == 8
        assert m['jam_receiver_lines_total{listener="http"}'] == 6
        assert m['jam_receiver_lines_total{listener="ws"}'] == 5
        assert m['jam_receiver_refused_total{listener="syslog",reason="program"}'] == 1
        assert m['jam_receiver_messages_total{listener="syslog"}'] == 9
        assert m['jam_receiver_line_bytes_total{listener="ws"}'] == sum(len(x) + 1 for x in lines + [lines[0]])
        assert m['jam_receiver_connections_total{listener="syslog"}'] == 3
        assert m['jam_receiver_open_connections{listener="http"}'] == 1  # this /metrics request
        (key,) = {k for k in minute_files(rx.log_dir)}
        assert m[f'jam_receiver_current_file_bytes{{key="{key}",path="{rx.log_dir / key}.log"}}'] > 0
        assert m["jam_receiver_disk_free_bytes"] > 0
        for listener in ("syslog", "http", "ws"):
            assert m[f'jam_receiver_received_bytes_total{{listener="{listener}"}}'] > 0
        status, health = rx.request("GET", "/healthz", listener="ws")
        assert status == 200 and json.loads(health)["status"] == "ok"
        assert rx.request("GET", "/nowhere")[0] == 404
        assert rx.request("GET", "/v1/telemetry")[0] == 405


def test_http_and_websocket_line_rules(tmp_path):
    """What the README promises for HTTP bodies and WebSocket messages, byte for byte."""
    with running_receiver(tmp_path / "logs") as rx:
        # HTTP: one line per LF; CRLF works; empty lines, NUL and invalid UTF-8 are stored as they are
        # (the pipeline turns them into rejected_lines); a last line without LF ends with the body.
        body = b'{"a":1}\r\n\n\xff\xfe not UTF-8\nNUL\x00inside\nlast, no LF'
        assert rx.post(body) == {"stored": 5, "refused": 0}
        assert minute_lines(rx.log_dir) == [b'{"a":1}', b"", b"\xff\xfe not UTF-8", b"NUL\x00inside", b"last, no LF"]
        # WebSocket: a message is one line with its trailing LFs and NULs stripped; a LF inside is written
        # as it is (so the file gets two lines); an empty message is an empty line.
        before = len(minute_lines(rx.log_dir))
        with ws_connect(ws_url(rx)) as ws:
            for message in (b"ends in LF\n\n", b"two\nlines", b"", b"nul\x00"):
                ws.send(message)
            assert read_count(ws, 4) == {"stored": 4, "refused": 0}
        assert minute_lines(rx.log_dir)[before:] == [b"ends in LF", b"two", b"lines", b"", b"nul"]
        # /metrics and /healthz answer on the WebSocket port too
        status, text = rx.request("GET", "/metrics", listener="ws")
        assert status == 200 and b'jam_receiver_lines_total{listener="ws"} 4' in text


def test_too_large_is_refused_whole_and_long_lines_spool(tmp_path):
    limit = 100 * KB
    fits, over = b"f" * (limit - 100), b"o" * (limit + 1)
    with running_receiver(tmp_path / "logs", max_message_bytes=limit, spool_bytes=64 * KB) as rx:
        # newline framing: the long line is dropped, the connection goes on
        send_syslog(rx.ports["syslog"], b"<14>jamtart: " + over + b"\n<14>jamtart: " + fits + b"\n<14>jamtart: after\n")
        # octet counting: the frame is refused and, as in syslog-ng, the connection closed
        send_syslog(
            rx.ports["syslog"],
            octet_frame(b"<14>jamtart: before")
            + octet_frame(b"<14>jamtart: " + over)
            + octet_frame(b"<14>jamtart: lost"),
        )
        assert rx.post([b"1", over, fits, b"2"]) == {"stored": 3, "refused": 1}
        with ws_connect(ws_url(rx)) as ws:
            ws.send(fits)
            ws.send(over)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1009
        wait_for(
            lambda: rx.metrics()['jam_receiver_refused_total{listener="ws",reason="too_large"}'] == 1, what="ws refusal"
        )
        assert sorted(minute_lines(rx.log_dir)) == sorted([fits, b"after", b"before", b"1", fits, b"2", fits])
        m = rx.metrics()
        assert m['jam_receiver_refused_total{listener="syslog",reason="too_large"}'] == 2
        assert m['jam_receiver_refused_total{listener="http",reason="too_large"}'] == 1
        assert not list(rx.log_dir.rglob(".spool*")), "spool files are unlinked"


def test_connection_limit_idle_timeout_and_slow_senders(tmp_path):
    with running_receiver(tmp_path / "logs", max_connections=3, idle_seconds=1, message_seconds=1) as rx:
        # three connections are the limit; the fourth of any listener is refused
        held = [socket.create_connection((LOOPBACK, rx.ports["syslog"])) for _ in range(3)]
        wait_for(lambda: rx.metrics()['jam_receiver_open_connections{listener="syslog"}'] == 3, what="3 open")
        extra = socket.create_connection((LOOPBACK, rx.ports["syslog"]))
        assert extra.recv(1) == b""  # closed at once
        # ... but an operator can still look at a full receiver: /healthz and /metrics answer, telemetry is 503
        assert rx.request("GET", "/healthz")[0] == 200
        status, reply = rx.request("POST", "/v1/telemetry", b"refused\n")
        assert status == 503 and "too many connections" in json.loads(reply)["error"]
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(ws_url(rx), open_timeout=5).close()
        assert refused.value.response.status_code == 503
        for s in held + [extra]:
            s.close()
        wait_for(lambda: rx.metrics()['jam_receiver_open_connections{listener="syslog"}'] == 0, what="closed")
        m = rx.metrics()
        assert m['jam_receiver_refused_total{listener="syslog",reason="max_connections"}'] == 1
        assert m['jam_receiver_refused_total{listener="ws",reason="max_connections"}'] == 1

        # an idle connection is closed after idle_seconds; a line sent whole before is kept
        idle = socket.create_connection((LOOPBACK, rx.ports["syslog"]))
        idle.sendall(b"<14>jamtart: sent before idling\n")
        idle.settimeout(5)
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert 0.9 < time.monotonic() - started < 3

        # a slowloris: bytes keep coming, but the message is never done within message_seconds
        slow = socket.create_connection((LOOPBACK, rx.ports["syslog"]))
        slow.sendall(b"<14>jamtart: slow")
        with pytest.raises(OSError):
            for _ in range(20):
                time.sleep(0.25)
                slow.sendall(b"x")
        slow.close()

        # the same over HTTP: a body line that never ends gets 408 with what was stored
        conn = socket.create_connection((LOOPBACK, rx.ports["http"]))
        conn.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nwhole\npartial")
        reply = recv_all(conn)
        assert reply.startswith(b"HTTP/1.1 408") and b'"stored": 1' in reply
        conn.close()

        assert minute_lines(rx.log_dir) == [b"sent before idling", b"whole"]
        m = rx.metrics()
        assert m['jam_receiver_refused_total{listener="syslog",reason="timeout"}'] == 1
        assert m['jam_receiver_refused_total{listener="http",reason="timeout"}'] == 1


def _reset(sock: socket.socket) -> None:
    """Closes with RST (SO_LINGER 0): a connection that breaks rather than ends."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_faults_leave_whole_lines_only(tmp_path):
    with running_receiver(tmp_path / "logs") as rx:
        port = rx.ports["syslog"]
        # octet counting, disconnect in the middle of a frame: the cut frame is not stored
        send_syslog(port, octet_frame(b"<14>jamtart: whole frame") + octet_frame(b"<14>jamtart: cut frame")[:-4])
        # newline framing, the connection breaks mid-line: the partial line is not stored
        s = socket.create_connection((LOOPBACK, port))
        s.sendall(b"<14>jamtart: whole line\n<14>jamtart: broken li")
        time.sleep(0.2)
        _reset(s)
        # ... but a clean close ends an unterminated line, as in syslog-ng (the Rust crate relies on it)
        send_syslog(port, b"<14>jamtart: unterminated, closed cleanly")
        # an octet count that lies: the frame is refused and the connection closed
        send_syslog(port, octet_frame(b"<14>jamtart: good") + b"9 <14>jamtart: lie" + octet_frame(b"<14>jamtart: gone"))
        # an HTTP body cut short: the whole lines are stored, the partial one is not
        conn = socket.create_connection((LOOPBACK, rx.ports["http"]))
        conn.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst\nsecond\nthi")
        time.sleep(0.2)
        conn.close()
        wait_for(
            lambda: rx.metrics()['jam_receiver_refused_total{listener="http",reason="incomplete"}'] == 1,
            what="http incomplete",
        )
        expected = [b"whole frame", b"whole line", b"unterminated, closed cleanly", b"good", b"first", b"second"]
        assert sorted(minute_lines(rx.log_dir)) == sorted(expected)
        m = rx.metrics()
        assert m['jam_receiver_refused_total{listener="syslog",reason="incomplete"}'] == 2
        assert m['jam_receiver_refused_total{listener="syslog",reason="bad_frame"}'] == 1


def test_sigterm_drains_every_connection(tmp_path):
    rx = start_receiver(tmp_path / "logs", drain_seconds=5)
    try:
        syslog = socket.create_connection((LOOPBACK, rx.ports["syslog"]))
        syslog.sendall(b"<14>jamtart: syslog before SIGTERM\n")
        body = b"http 1\nhttp 2\n"
        post = socket.create_connection((LOOPBACK, rx.ports["http"]))
        post.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:7])
        ws = ws_connect(ws_url(rx))
        ws.send("ws before SIGTERM")
        assert read_count(ws, 1) == {"stored": 1, "refused": 0}
        time.sleep(0.1)
        rx.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        post.sendall(body[7:])  # the request in flight is finished and answered
        assert b'"stored": 2' in recv_all(post)
        assert json.loads(ws.recv(timeout=5)) == {"stored": 1, "refused": 0}  # the last word: its count
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
        syslog.settimeout(5)
        assert syslog.recv(1) == b""  # closed once quiet
        assert rx.proc.wait(10) == 0
        with pytest.raises(OSError):
            socket.create_connection((LOOPBACK, rx.ports["syslog"]), timeout=1)
    finally:
        rx.stop()
    assert sorted(minute_lines(rx.log_dir)) == sorted(
        [b"syslog before SIGTERM", b"http 1", b"http 2", b"ws before SIGTERM"]
    )
    assert "minute files fsynced and closed" in rx.log_text()


def test_sigkill_under_load_then_restart(tmp_path):
    """What was acknowledged is on disk after a SIGKILL, no file ends in a partial line, and a restarted
    receiver appends whole lines after what the killed one left."""
    logs = tmp_path / "logs"
    rx = start_receiver(logs)
    acked: list[bytes] = []
    sent: set[bytes] = set()
    sent_syslog: set[bytes] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def http_client(n: int) -> None:
        batch_no = 0
        while not stop.is_set():
            # big lines make a kill in the middle of a write likely
            batch = [
                b'{"client":%d,"batch":%d,"i":%d,"pad":"%s"}' % (n, batch_no, i, b"p" * (i % 7 * 40 * KB))
                for i in range(40)
            ]
            with lock:
                sent.update(batch)
            try:
                reply = rx.post(batch)
            except (OSError, http.client.HTTPException):
                return
            with lock:
                acked.extend(batch[: reply["stored"]])
            batch_no += 1

    def syslog_client(n: int) -> None:
        try:
            with socket.create_connection((LOOPBACK, rx.ports["syslog"])) as s:
                i = 0
                while not stop.is_set():
                    batch = [b'{"syslog":%d,"i":%d}' % (n, i + k) for k in range(100)]
                    sent_syslog.update(batch)
                    s.sendall(b"".join(b"<14>jamtart: " + line + b"\n" for line in batch))
                    i += 100
                    time.sleep(0.01)
        except OSError:
            return

    threads = [threading.Thread(target=http_client, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=syslog_client, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) > 400, timeout=30, what="load")
    rx.proc.send_signal(signal.SIGKILL)
    rx.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)

    rx2 = start_receiver(logs)
    try:
        assert rx2.post([b'{"after":"restart"}']) == {"stored": 1, "refused": 0}
    finally:
        assert rx2.stop() == 0
    lines = minute_lines(logs)  # asserts every file ends in LF
    counts: dict[bytes, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    assert all(counts.get(line) == 1 for line in acked), "an acknowledged line is missing or doubled"
    # Lines written but not yet acknowledged when the kill came are whole lines that were sent.
    assert all(line in sent or line in sent_syslog or line == b'{"after":"restart"}' for line in set(lines))
    assert max(counts.values()) == 1
    assert lines[-1] == b'{"after":"restart"}'


def test_partial_last_line_is_cut_on_start_and_open(tmp_path):
    logs = tmp_path / "logs"
    now_key = time.strftime("%Y/%m/%d/%H%M", time.gmtime())
    current = logs / f"{now_key}.log"
    older = logs / "2025/04/23/0600.log"
    for path in (current, older):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a\nb\npartial line from a crash")
    ancient = logs / "2024/01/01/0000.log"  # outside the newest two day folders: left alone
    ancient.parent.mkdir(parents=True)
    ancient.write_bytes(b"x\ncut")
    with running_receiver(logs) as rx:
        assert current.read_bytes() == b"a\nb\n" and older.read_bytes() == b"a\nb\n"
        rx.post([b"c"])
    assert current.read_bytes() in (b"a\nb\nc\n", b"a\nb\n")  # the post may land in the next minute
    assert ancient.read_bytes() == b"x\ncut"
    assert b"ended in a partial line" in rx.stderr_path.read_bytes()


def test_minute_files_roll_over_late_lines_and_cut_back(tmp_path):
    files = MinuteFiles(tmp_path)
    t = 1_745_388_000.0  # 2025-04-23T06:00:00Z
    assert files.append(t + 1, [b"one", b"two"]) == 2
    assert files.append(t + 61, [b"three"]) == 1
    files.roll(t + 61)  # 06:00 is over: fsynced and closed
    assert set(files._open) == {"2025/04/23/0601"}
    assert files.append(t + 59, [b"late"]) == 1  # a late line reopens its minute
    files.close()
    assert minute_files(tmp_path) == {"2025/04/23/0600": b"one\ntwo\nlate\n", "2025/04/23/0601": b"three\n"}

    path = tmp_path / "cut.log"
    path.write_bytes(b"x\n" * 3 + b"y" * 3_000_000)
    fd = os.open(path, os.O_RDWR)
    assert cut_partial_line(fd, path.stat().st_size) == 6
    os.close(fd)

    # A device that refuses every write: nothing counted as stored, nothing left behind
    (tmp_path / "2025/04/23/0602.log").symlink_to("/dev/full")
    with pytest.raises(WriteFailed) as failed:
        MinuteFiles(tmp_path).append(t + 121, [b"refused"])
    assert failed.value.stored == 0 and failed.value.disk_full


def test_full_disk_clear_errors_then_serves_again(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs for the full-disk test: {result.stderr.strip() or result.returncode}")
    try:
        ballast = mount / "ballast"
        ballast.write_bytes(b"\0" * 1024 * KB)
        logs = mount / "logs"
        with running_receiver(logs, spool_bytes=64 * KB) as rx:
            line = b"z" * (100 * KB)
            stored_lines = 0
            # One line per request: once one is refused, the disk cannot hold it again (its spool and
            # its place in the file), so health must say so until space returns.
            for _ in range(60):
                status, reply = rx.request("POST", "/v1/telemetry", line + b"\n")
                counts = json.loads(reply)
                stored_lines += counts["stored"]
                if status == 507:
                    assert "No space left on device" in counts["error"]
                    break
                assert status == 200
            else:
                pytest.fail("the disk never filled")
            assert minute_lines(logs) == [line] * stored_lines  # whole lines only, exactly those counted
            assert rx.request("GET", "/healthz")[0] == 503
            # a syslog connection gets closed; the log says why
            s = socket.create_connection((LOOPBACK, rx.ports["syslog"]))
            s.sendall(b"<14>jamtart: " + line + b"\n")
            s.settimeout(5)
            assert s.recv(1) == b""
            s.close()
            with ws_connect(ws_url(rx)) as ws:
                ws.send(line)
                reply = json.loads(ws.recv(timeout=5))
                assert reply["stored"] == 0 and "No space left" in reply["error"]
            assert "No space left on device" in rx.log_text()
            assert minute_lines(logs) == [line] * stored_lines

            ballast.unlink()  # space returns
            assert rx.post([b"after space returned"]) == {"stored": 1, "refused": 0}
            assert rx.request("GET", "/healthz")[0] == 200
            assert rx.metrics()['jam_receiver_refused_total{listener="http",reason="disk_full"}'] >= 1
        assert minute_lines(logs) == [line] * stored_lines + [b"after space returned"]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_load_every_line_once(tmp_path):
    """50 syslog connections x 2,000 lines and a 50 MB HTTP stream at the same time: nothing lost,
    nothing doubled, no line mixed with another, each connection's lines in order."""
    connections, per_connection = 50, 2000
    http_lines = [b'{"http":%d,"pad":"%s"}' % (i, b"h" * 1000) for i in range(50 * KB)]
    with running_receiver(tmp_path / "logs") as rx:

        def syslog_sender(n: int) -> None:
            data = b"".join(
                b'<14>2026-01-01T00:00:00Z node jamtart[%d]: {"c":%d,"i":%d}\n' % (n, n, i)
                for i in range(per_connection)
            )
            with socket.create_connection((LOOPBACK, rx.ports["syslog"])) as s:
                for at in range(0, len(data), 7919):  # odd-sized writes, so lines straddle reads
                    s.sendall(data[at : at + 7919])

        replies = []

        def http_sender() -> None:
            def body():
                for at in range(0, len(http_lines), 1000):
                    yield b"".join(line + b"\n" for line in http_lines[at : at + 1000])

            conn = http.client.HTTPConnection(LOOPBACK, rx.ports["http"], timeout=120)
            conn.request("POST", "/v1/telemetry", body=body(), encode_chunked=True)
            replies.append(json.loads(conn.getresponse().read()))

        threads = [threading.Thread(target=syslog_sender, args=(n,)) for n in range(connections)]
        threads.append(threading.Thread(target=http_sender))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        wait_for(
            lambda: rx.metrics()['jam_receiver_lines_total{listener="syslog"}'] == connections * per_connection,
            timeout=60,
            what="all syslog lines",
        )
    assert replies == [{"stored": len(http_lines), "refused": 0}]
    lines = minute_lines(tmp_path / "logs")
    assert len(lines) == connections * per_connection + len(http_lines)
    assert [line for line in lines if line.startswith(b'{"http"')] == http_lines
    seen: dict[int, int] = {}
    for line in lines:
        if line.startswith(b'{"c"'):
            record = json.loads(line)
            assert record["i"] == seen.get(record["c"], -1) + 1, "lines of a connection out of order or doubled"
            seen[record["c"]] = record["i"]
    assert seen == {n: per_connection - 1 for n in range(connections)}


def test_started_beside_dagster_the_helper_way(tmp_path):
    """The lead's end-to-end test starts the receiver like this: free ports, wait for /healthz, SIGTERM."""
    with running_receiver(tmp_path / "logs") as rx:
        assert set(rx.ports) == {"syslog", "http", "ws"}
        assert rx.post([sample_line("128")])["stored"] == 1
    assert minute_lines(rx.log_dir) == [sample_line("128")]


DAGSTER_DEV = f'"{PROJECT}/.venv/bin/dagster" dev -w "{PROJECT}/workspace.yaml" -h 127.0.0.1 -p 3000'


def _make(*args: str, env: dict, **kwargs):
    return subprocess.Popen(
        ["make", "-s", "--no-print-directory", *args], cwd=PROJECT, env=env, start_new_session=True, **kwargs
    )


def test_make_receive_and_jam_receive_make_dev(tmp_path):
    """`make receive` runs `jam-etl receive`; `JAM_RECEIVE=1 make dev` starts it before dagster dev and
    stops there, with the receiver's one-line message, when the receiver cannot start."""
    logs, ready = tmp_path / "logs", tmp_path / "ready.json"
    env = {**receiver_env(logs, ready), "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("JAM_RECEIVE", None)
    make = _make("receive", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready.exists() or make.poll() is not None, timeout=60, what="make receive")
        info = json.loads(ready.read_text())
        conn = http.client.HTTPConnection(LOOPBACK, info["http"], timeout=30)
        conn.request("POST", "/v1/telemetry", body=b"via make receive\n")
        assert json.loads(conn.getresponse().read()) == {"stored": 1, "refused": 0}
        conn.close()
        os.kill(info["pid"], signal.SIGTERM)
        assert make.wait(30) == 0
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    assert minute_lines(logs) == [b"via make receive"]

    # Without JAM_RECEIVE the dev recipe is dagster dev alone; with it, the receiver comes first.
    plain = subprocess.run(
        ["make", "-n", "--no-print-directory", "dev"], cwd=PROJECT, env=env, capture_output=True, text=True, check=True
    )
    assert plain.stdout.splitlines()[-1] == f'cd "{env["DAGSTER_HOME"]}" && {DAGSTER_DEV}'
    with_rx = subprocess.run(
        ["make", "-n", "--no-print-directory", "dev"],
        cwd=PROJECT,
        env={**env, "JAM_RECEIVE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    last = with_rx.stdout.splitlines()[-1]
    assert last.startswith(".venv/bin/jam-etl receive & ") and "trap " in last
    assert last.endswith(plain.stdout.splitlines()[-1])

    bad = {**env, "JAM_RECEIVE": "1", "JAM_RECEIVER_SYSLOG_PORT": "five"}
    dev = _make("dev", env=bad, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = dev.communicate(timeout=120)
    assert dev.returncode == 2
    assert "jam-etl: JAM_RECEIVER_SYSLOG_PORT='five': expected a TCP port (0-65535) or 'off'\n" in err.decode()
    assert b"Launching Dagster services" not in out + err  # dagster dev never started


@pytest.mark.parametrize("ending", ["dagster dev exits", "Ctrl-C"])
def test_jam_receive_dev_recipe_stops_the_receiver_with_dagster_dev(tmp_path, ending):
    """The shell line `JAM_RECEIVE=1 make dev` runs, with a stand-in for dagster dev (whose port 3000 is
    fixed): the receiver serves while it runs and is stopped cleanly (drained, fsynced) when it ends."""
    logs, ready = tmp_path / "logs", tmp_path / "ready.json"
    env = {**receiver_env(logs, ready), "DAGSTER_HOME": str(tmp_path / "home"), "JAM_RECEIVE": "1"}
    (tmp_path / "home").mkdir()  # `make dev` prepares it first
    recipe = subprocess.run(
        ["make", "-n", "--no-print-directory", "dev"], cwd=PROJECT, env=env, capture_output=True, text=True, check=True
    )
    line = recipe.stdout.splitlines()[-1]
    assert line.endswith(DAGSTER_DEV)
    stand_in = "sleep 3; exit 7" if ending == "dagster dev exits" else "sleep 60"
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        shell = subprocess.Popen(
            ["/bin/sh", "-c", line.replace(DAGSTER_DEV, stand_in)],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
        )
    try:
        wait_for(lambda: ready.exists(), timeout=30, what="the receiver")
        info = json.loads(ready.read_text())
        conn = http.client.HTTPConnection(LOOPBACK, info["http"], timeout=30)
        conn.request("POST", "/v1/telemetry", body=b"beside dagster dev\n")
        assert json.loads(conn.getresponse().read()) == {"stored": 1, "refused": 0}
        conn.close()
        if ending == "Ctrl-C":
            os.killpg(shell.pid, signal.SIGINT)  # the terminal sends it to the whole foreground group
        assert shell.wait(30) == (7 if ending == "dagster dev exits" else 130)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)
    assert "minute files fsynced and closed" in log.read_text()
    assert minute_lines(logs) == [b"beside dagster dev"]


def test_readme_lists_every_setting_with_its_default():
    """The README's settings table of the receiver is config.SETTINGS (names, defaults)."""
    from jam_assets.receiver.config import SETTINGS

    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## The receiver", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`JAM_"):
            rows[cells[0].strip("`")] = cells[1]
    for name, (default, _meaning) in SETTINGS.items():
        assert name in rows, f"{name} is missing from the README's receiver settings"
        if default:
            assert f"`{default}`" in rows[name], (name, default, rows[name])
    assert "JAM_RECEIVER_LOG_LEVEL" in rows
