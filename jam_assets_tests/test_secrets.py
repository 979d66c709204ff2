"""No secret value appears in captured logs, run config, or event metadata: production resources
(BigQuery and Dune fakes), secrets given as environment variables through dg.EnvVar."""

import base64

import dagster as dg

from jam_assets.definitions import build_defs
from jam_assets.defs.assets import minute_file_tables
from jam_assets.defs.partitions import minute_files

from .fakes import FakeServer, bigquery_handler, dune_handler
from .helpers import sample_line, write_minute

DUNE_KEY = "dune-SECRET-5b7e1d"
GCP_KEY = base64.b64encode(b'{"type": "service_account", "private_key": "GCP-SECRET-9f2c"}').decode()


def test_no_secret_in_logs_or_metadata(settings, monkeypatch, capfd, caplog):
    write_minute(settings.log_root, "2025/04/23/0600", [sample_line("128"), sample_line("141")])
    with FakeServer(bigquery_handler) as bq, FakeServer(dune_handler) as dune:
        dune.state["insert_statuses"] = [500]  # a retried failure must not leak the key either
        for name, value in {"DAGSTER_DEPLOYMENT": "production", "JAM_BQ_PROJECT": "proj", "JAM_BQ_API_ENDPOINT": bq.url,
                            "JAM_BQ_CREDENTIALS_B64": GCP_KEY, "DUNE_API_KEY": DUNE_KEY, "DUNE_NAMESPACE": "jamteam",
                            "JAM_LOG_DIR": settings.log_dir, "JAM_EXPORT_DIR": settings.export_dir}.items():
            monkeypatch.setenv(name, value)
        defs = build_defs()
        resources = defs.resources
        from jam_assets.defs.dune import DuneResource
        resources["dune"] = DuneResource(api_key=dg.EnvVar("DUNE_API_KEY"), namespace="jamteam", base_url=dune.url,
                                         max_requests_per_minute=6000, backoff_seconds=0.01)
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(minute_files.name, ["2025/04/23/0600"])
            assert dg.materialize([minute_file_tables], instance=instance, resources=resources,
                                  partition_key="2025/04/23/0600").success
            dune_job = dg.Definitions(jobs=[defs.resolve_job_def("dune_upload_job")], resources=resources).resolve_job_def("dune_upload_job")
            assert dune_job.execute_in_process(instance=instance).success
            assert any(r.path.endswith("/insert") for r in dune.requests)
            assert dune.requests[-1].headers["x-dune-api-key"] == DUNE_KEY  # it was really used
            stored = []
            for run in instance.get_runs():
                stored.append(dg.serialize_value(run))
                stored.extend(dg.serialize_value(e) for e in instance.all_logs(run.run_id))
    captured = capfd.readouterr()
    haystacks = stored + [captured.out, captured.err, caplog.text]
    for secret in (DUNE_KEY, GCP_KEY, "GCP-SECRET-9f2c"):
        assert not any(secret in h for h in haystacks), f"{secret} leaked"
