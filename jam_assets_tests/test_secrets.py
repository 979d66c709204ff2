"""No secret appears in logs, run records, events or metadata, with every secret really used:

- a service-account key (JAM_BQ_CREDENTIALS_B64) signs a token request to a local OAuth token
  endpoint, which checks the signature and hands out an access token; the BigQuery client sends
  that token to the emulator (the proxy records the Authorization header);
- the Dune API key authenticates the uploads to the Dune stand-in, through a retried failure;
- the alert webhook's URL (which carries its own token) receives a failed run's alert.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import dagster as dg
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from jam_assets.definitions import build_defs
from jam_assets.defs.alerts import alert_on_run_failure
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.dune import DuneResource, dune_upload_job
from jam_assets.defs.partitions import minute_files

from .bigquery_emulator import bigquery_emulator, bq, bq_dataset  # noqa: F401 (fixtures)
from .bq_production import production_environ
from .dune_standin import DuneStandIn
from .helpers import sample_line, warehouse_down, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEY = "2025/04/23/0600"
DUNE_KEY = "dune-SECRET-5b7e1d"
ACCESS_TOKEN = "ya29.ACCESS-SECRET-77f0"
WEBHOOK_TOKEN = "HOOK-SECRET-31aa"


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@pytest.fixture
def token_endpoint():
    """An OAuth token endpoint that accepts only JWTs signed by the service account's key."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_key = private_key.public_key()
    granted = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            header, payload, signature = form["assertion"][0].split(".")
            public_key.verify(_b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
            granted.append(json.loads(_b64url(payload)))
            body = json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "jam-test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "etl@jam-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"http://127.0.0.1:{server.server_address[1]}/token",
    }
    yield base64.b64encode(json.dumps(info).encode()).decode(), pem, granted
    server.shutdown()


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/{WEBHOOK_TOKEN}", received
    server.shutdown()


def test_no_secret_in_logs_runs_events_or_metadata(settings, bq_dataset, token_endpoint, webhook, monkeypatch, capfd):
    credentials_b64, pem, granted = token_endpoint
    webhook_url, alerts = webhook
    write_minute(settings.log_root, KEY, [sample_line("128"), sample_line("141")])
    with DuneStandIn(DUNE_KEY, requests_per_minute=None) as dune:
        dune.fail_next(500, "/insert")  # a retried failure must not leak the key either
        for name, value in {
            **production_environ(settings, bq_dataset),
            "JAM_BQ_CREDENTIALS_B64": credentials_b64,
            "DUNE_API_KEY": DUNE_KEY,
            "DUNE_NAMESPACE": "jamteam",
            "JAM_ALERT_WEBHOOK": webhook_url,
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.delenv("JAM_BQ_ANONYMOUS", raising=False)
        defs = build_defs()
        resources = dict(defs.resources)
        # As configured from the environment, only pointed at the stand-in.
        resources["dune"] = DuneResource(
            api_key=dg.EnvVar("DUNE_API_KEY"),
            namespace=dg.EnvVar("DUNE_NAMESPACE"),
            base_url=dune.url,
            max_requests_per_minute=6000,
            backoff_seconds=0.01,
        )
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(minute_files.name, [KEY])
            assert dg.materialize(
                [minute_file_tables], instance=instance, resources=resources, partition_key=KEY
            ).success
            upload = dg.Definitions(jobs=[dune_upload_job], resources=resources)
            assert upload.resolve_job_def("dune_upload_job").execute_in_process(instance=instance).success

            down = warehouse_down(resources)
            failed = dg.materialize(
                [minute_file_tables], instance=instance, resources=down, partition_key=KEY, raise_on_error=False
            )
            failure = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
            alert_on_run_failure(
                dg.build_run_status_sensor_context(
                    sensor_name="alert_on_run_failure",
                    dagster_event=failure,
                    dagster_instance=instance,
                    dagster_run=instance.get_run_by_id(failed.run_id),
                    resources={"alerts": resources["alerts"]},
                ).for_run_failure()
            )

            stored = []
            for run in instance.get_runs():
                stored.append(dg.serialize_value(run))
                stored.extend(dg.serialize_value(e) for e in instance.all_logs(run.run_id))

    # Every secret was really used.
    assert granted and granted[0]["iss"] == "etl@jam-test.iam.gserviceaccount.com"
    bearer = {r.headers.get("authorization") for r in bq_dataset.proxy.requests}
    assert bearer == {f"Bearer {ACCESS_TOKEN}"}
    assert len(dune.rows("jamteam", "jam_blocks")) == 1
    assert all(r.headers.get("x-dune-api-key") == DUNE_KEY for r in dune.requests())
    assert len(alerts) == 1 and alerts[0]["run_id"] == failed.run_id

    captured = capfd.readouterr()
    haystacks = stored + [captured.out, captured.err]
    secrets = [DUNE_KEY, credentials_b64, pem.splitlines()[1], ACCESS_TOKEN, WEBHOOK_TOKEN]
    leaked = [s[:12] for s in secrets if any(s in h for h in haystacks)]
    assert leaked == []
