"""A failed run is posted to the alert webhook, a local HTTP server here; the URL never shows in logs."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from jam_assets.definitions import build_defs
from jam_assets.defs.alerts import AlertWebhook, alert_on_run_failure
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files
from jam_assets.defs.settings import Env

from .helpers import sample_line, warehouse_down, write_minute

pytestmark = pytest.mark.slow  # a Dagster instance, a server or a subprocess: not in `make test-fast`

KEY = "2025/04/23/0600"


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-s3cret", received
    server.shutdown()


def test_a_failed_run_is_posted_to_the_webhook(settings, resources, webhook, monkeypatch, caplog):
    url, received = webhook
    monkeypatch.setenv("JAM_ALERT_WEBHOOK", url)
    write_minute(settings.log_root, KEY, [sample_line("128")])
    down = warehouse_down(resources, "BigQuery p.d.{table}: 503 Service Unavailable")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(minute_files.name, [KEY])
        result = dg.materialize(
            [minute_file_tables], instance=instance, resources=down, partition_key=KEY, raise_on_error=False
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"alerts": AlertWebhook(url=dg.EnvVar("JAM_ALERT_WEBHOOK"))},
        ).for_run_failure()
        alert_on_run_failure(context)
    ((path, body),) = received
    assert path == "/hooks/T0KEN-s3cret"
    assert body["run_id"] == result.run_id and body["minute_files"] == KEY
    assert body["text"] == (
        f"jam-etl: run {result.run_id[:8]} of __ephemeral_asset_job__ failed for {KEY}: "
        "BigQuery p.d.blocks: 503 Service Unavailable"
    )
    assert "T0KEN" not in caplog.text


def test_the_alert_sensor_exists_only_with_a_webhook(monkeypatch, webhook):
    names = lambda: {s.name for s in build_defs(env=Env()).sensors}
    monkeypatch.delenv("JAM_ALERT_WEBHOOK", raising=False)
    always = {"minute_file_sensor", "tables_follow_raw_log", "daily_reports_sensor"}
    assert names() == always
    monkeypatch.setenv("JAM_ALERT_WEBHOOK", webhook[0])
    assert names() == always | {"alert_on_run_failure"}
