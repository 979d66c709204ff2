"""The receiver against syslog-ng, the same load on the same machine in one run. Not a test: it prints figures.

    .venv/bin/python bench/receiver_bench.py          50 connections x 20,000 lines; 1 GB streams
    .venv/bin/python bench/receiver_bench.py --quick  50 connections x 2,000 lines; 50 MB streams

Loads, each sent to jam-etl's syslog-ng (its README configuration, jam_assets_tests/syslog_ng.py, with
max-connections() raised from syslog-ng's default of 10, which would turn 40 of the 50 senders away) and
to the receiver (all three listeners on, as deployed):
  - many connections: N syslog connections at once, M lines each, Go log/syslog framing, the real
    sample lines (1.7-2.8 KB) in turn;
  - one stream over syslog: one connection, lines of the same kind, up to the stream size;
  - one stream over HTTP (receiver only; syslog-ng has no HTTP): the same lines as one chunked POST.
A load's time runs from the first byte sent to the last line on disk (minute files polled every 20 ms).
Lines/s and MB/s count what was written (MB = 10^6 bytes of minute file), and the ratio is the
receiver's rate over syslog-ng's. The senders are Python threads on the same 2 cores as the servers.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jam_assets_tests.helpers import sample_line  # noqa: E402
from jam_assets_tests.receiver_helpers import LOOPBACK, start_receiver  # noqa: E402
from jam_assets_tests.syslog_ng import syslog_ng_binary, syslog_ng_server  # noqa: E402

LINES = [sample_line(t) for t in ("128", "13", "255", "142")]
HOST = socket.gethostname().encode()


def say(msg: str) -> None:
    print(f"[receiver-bench] {msg}", file=sys.stderr, flush=True)


def syslog_block(lines: int) -> tuple[bytes, int]:
    """`lines` Go-style syslog messages and the bytes they become in a minute file."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    messages = [LINES[i % len(LINES)] for i in range(lines)]
    data = b"".join(b"<14>%s %s jamtart[%d]: %s\n" % (stamp, HOST, os.getpid(), m) for m in messages)
    return data, sum(len(m) + 1 for m in messages)


def ndjson_block(lines: int) -> bytes:
    return b"".join(LINES[i % len(LINES)] + b"\n" for i in range(lines))


def written(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("[0-9]*/[0-9]*/[0-9]*/[0-9]*.log"))


def wait_written(root: Path, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while written(root) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {written(root)} of {expected} bytes arrived in {root} within {timeout:.0f} s")
        time.sleep(0.02)


def many_connections(port: int, root: Path, connections: int, per_connection: int) -> tuple[float, int, int]:
    data, out_bytes = syslog_block(per_connection)
    base = written(root)

    def send() -> None:
        with socket.create_connection((LOOPBACK, port)) as s:
            s.sendall(data)

    threads = [threading.Thread(target=send) for _ in range(connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_written(root, base + connections * out_bytes, timeout=3600)
    return time.monotonic() - start, connections * per_connection, connections * out_bytes


def syslog_stream(port: int, root: Path, size: int) -> tuple[float, int, int]:
    block, block_out = syslog_block(400)
    blocks = max(1, size // len(block))
    base = written(root)
    start = time.monotonic()
    with socket.create_connection((LOOPBACK, port)) as s:
        for _ in range(blocks):
            s.sendall(block)
    wait_written(root, base + blocks * block_out, timeout=3600)
    return time.monotonic() - start, blocks * 400, blocks * block_out


def http_stream(port: int, root: Path, size: int) -> tuple[float, int, int]:
    block = ndjson_block(400)
    blocks = max(1, size // len(block))
    start = time.monotonic()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=3600)
    conn.request("POST", "/v1/telemetry", body=(block for _ in range(blocks)), encode_chunked=True)
    reply = conn.getresponse().read()
    elapsed = time.monotonic() - start
    assert b'"stored": %d' % (blocks * 400) in reply, reply
    return elapsed, blocks * 400, blocks * len(block)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rate(result: tuple[float, int, int]) -> tuple[float, float]:
    seconds, lines, out = result
    return lines / seconds, out / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 x 2,000 lines and 50 MB streams")
    args = parser.parse_args()
    connections, per_connection = 50, 2000 if args.quick else 20_000
    stream = (50 if args.quick else 1024) * 1024 * 1024
    if syslog_ng_binary() is None:
        raise SystemExit("syslog-ng is not installed: run scripts/ensure-syslog-ng first")

    work = Path(tempfile.mkdtemp(prefix="jam-receiver-bench-"))
    rows: list[tuple[str, tuple[float, int, int] | None, tuple[float, int, int]]] = []
    try:
        # The README's syslog-ng takes 10 connections at most (syslog-ng's default); lifted here.
        with syslog_ng_server(max_connections=connections + 10) as sng:
            rx = start_receiver(work / "receiver" / "logs")
            try:
                for name, load in (
                    (
                        f"{connections} connections x {per_connection:,} lines",
                        lambda port, root: many_connections(port, root, connections, per_connection),
                    ),
                    (
                        f"one syslog stream, {stream // 2**20:,} MB",
                        lambda port, root: syslog_stream(port, root, stream),
                    ),
                ):
                    say(f"{name}: syslog-ng")
                    # Files stay until the end: syslog-ng would go on writing to a deleted one.
                    theirs = load(sng.ports["readme"], sng.roots["readme"])
                    say(f"{name}: receiver")
                    ours = load(rx.ports["syslog"], rx.log_dir)
                    rows.append((name, theirs, ours))
                say("HTTP stream: receiver")
                rows.append(
                    (
                        f"one HTTP stream, {stream // 2**20:,} MB (receiver only)",
                        None,
                        http_stream(rx.ports["http"], rx.log_dir, stream),
                    )
                )
                rss = peak_rss_mb(rx.proc.pid)
            finally:
                rx.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"receiver vs syslog-ng ({'quick' if args.quick else 'full'}) on {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(f"  {'load':<44} {'syslog-ng':>26} {'receiver':>26} {'ratio':>7}")
    for name, theirs, ours in rows:
        our_lines, our_mb = rate(ours)
        ours_text = f"{our_lines:>9,.0f} lines/s {our_mb:>6.1f} MB/s"
        if theirs is None:
            print(f"  {name:<44} {'-':>26} {ours_text:>26} {'-':>7}")
            continue
        their_lines, their_mb = rate(theirs)
        theirs_text = f"{their_lines:>9,.0f} lines/s {their_mb:>6.1f} MB/s"
        print(f"  {name:<44} {theirs_text:>26} {ours_text:>26} {our_lines / their_lines:>6.2f}x")
    print(f"  receiver peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
