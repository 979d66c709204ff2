"""A private syslog-ng for the tests: jam-etl's configuration on loopback ports, a temp folder, torn down after.

`make test` installs Debian's syslog-ng-core (scripts/ensure-syslog-ng). The configuration is the one
in jam-etl's README, verbatim except for its port (`tcp(ip(0.0.0.0) port(5000) ...)`) and its path
(`/var/log/jam/...`). Two sources follow it that are not in the README: the README's `tcp()` source
reads RFC 3164 over newline framing only, so it drops every RFC 5424 message (it takes the `1` of
`<14>1` for the program name) and cannot read octet-counted frames; `rfc5424` (newline framing, the
RFC 5424 parser with its RFC 3164 fallback) and `framed` (syslog-ng's `syslog()` source: octet
counting) are what that traffic is compared against. All three share the README's filter and template.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .helpers import free_port

# jam-etl's README (jam-duna/jamtestnet, jam-etl/README.md, "Supplying data to Telemetry"), with
# {port} and {root} standing for its port 5000 and its /var/log/jam.
README_CONFIG = """\
@version: 3.27
@include "scl.conf"

# systemctl restart syslog-ng.service

# global options.
options { chain_hostnames(off); flush_lines(0); use_dns(yes); use_fqdn(no);
	  dns_cache(yes); owner("root"); group("adm"); perm(0640);
	  stats_freq(0); keep_hostname(yes); log_fifo_size(100000);
	  log_msg_size(25000000); # Support 12MB wps, preimages.
};

source s_network {
    tcp(ip(127.0.0.1) port({port}) keep_hostname(yes) use-dns(yes)); 
};
destination d_logs {
    file("{root}/${YEAR}/${MONTH}/${DAY}/${HOUR}${MIN}.log" template("${MESSAGE}\\n") create-dirs(yes));
};
filter f_jamduna { match("^jamtart" value("PROGRAM")); };
log {
  source(s_network);
  filter(f_jamduna);
  destination(d_logs);
};
"""  # noqa: E101, W291 (tabs and a trailing space, as in the README)

# Not in the README: the sources for the traffic its tcp() source cannot read (see the module docstring).
EXTRA_SOURCES = """
source s_rfc5424 { network(ip(127.0.0.1) port({rfc5424_port}) transport("tcp") flags(syslog-protocol)); };
source s_framed { syslog(ip(127.0.0.1) port({framed_port}) transport("tcp")); };
destination d_rfc5424 { file("{rfc5424_root}/${YEAR}/${MONTH}/${DAY}/${HOUR}${MIN}.log" template("${MESSAGE}\\n") create-dirs(yes)); };
destination d_framed { file("{framed_root}/${YEAR}/${MONTH}/${DAY}/${HOUR}${MIN}.log" template("${MESSAGE}\\n") create-dirs(yes)); };
log { source(s_rfc5424); filter(f_jamduna); destination(d_rfc5424); };
log { source(s_framed); filter(f_jamduna); destination(d_framed); };
"""

SOURCES = ("readme", "rfc5424", "framed")


def syslog_ng_binary() -> str | None:
    return shutil.which("syslog-ng") or ("/usr/sbin/syslog-ng" if os.path.exists("/usr/sbin/syslog-ng") else None)


def _fill(template: str, **values: object) -> str:
    # str.format would trip over syslog-ng's own braces; only our placeholders are replaced.
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


@dataclass
class SyslogNg:
    ports: dict[str, int]  # source name -> TCP port
    roots: dict[str, Path]  # source name -> log root it writes
    proc: subprocess.Popen
    stderr_path: Path

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextmanager
def syslog_ng_server(max_connections: int | None = None) -> Iterator[SyslogNg]:
    """A private syslog-ng. `max_connections` (the bench's) lifts the README source's limit, which is
    syslog-ng's default of 10 concurrent connections, the README setting none."""
    binary = syslog_ng_binary()
    if binary is None:
        raise RuntimeError("syslog-ng is not installed (make test installs Debian's syslog-ng-core)")
    work = Path(tempfile.mkdtemp(prefix="jam-syslog-ng-"))
    ports = {name: free_port() for name in SOURCES}
    roots = {name: work / name for name in SOURCES}
    readme = _fill(README_CONFIG, port=ports["readme"], root=roots["readme"])
    if max_connections is not None:
        readme = readme.replace("use-dns(yes));", f"use-dns(yes) max-connections({max_connections}));")
    config = readme + _fill(
        EXTRA_SOURCES,
        rfc5424_port=ports["rfc5424"],
        framed_port=ports["framed"],
        rfc5424_root=roots["rfc5424"],
        framed_root=roots["framed"],
    )
    (work / "syslog-ng.conf").write_text(config)
    stderr_path = work / "stderr.log"
    # TZ=UTC: syslog-ng names files by the message's timestamp in its local zone.
    env = {**os.environ, "TZ": "UTC"}
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                binary,
                "--foreground",
                "--stderr",
                "--no-caps",
                f"--cfgfile={work / 'syslog-ng.conf'}",
                f"--persist-file={work / 'persist'}",
                f"--pidfile={work / 'pid'}",
                f"--control={work / 'ctl'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        for port in ports.values():
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"syslog-ng exited with {proc.returncode}: {stderr_path.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"syslog-ng did not listen on {port}: {stderr_path.read_text()}") from None
                    time.sleep(0.05)
        yield SyslogNg(ports, roots, proc, stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
