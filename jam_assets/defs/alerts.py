"""Alerting: a failed run is posted to a webhook (JAM_ALERT_WEBHOOK), so someone learns that ingest stopped.

The body is JSON with a `text` field (what Slack's and Mattermost's incoming webhooks show) plus the
run's job, minute files and error. The webhook's URL is a secret (it carries its own token): it
comes from `dg.EnvVar`, and neither it nor the response body is ever logged.
"""

from __future__ import annotations

import dagster as dg
import requests

from .partitions import describe_partitions


class AlertWebhook(dg.ConfigurableResource):
    """Where alerts go; `url` should always be `dg.EnvVar("JAM_ALERT_WEBHOOK")`."""

    url: str
    timeout_seconds: float = 10.0

    def post(self, body: dict) -> int:
        response = requests.post(self.url, json=body, timeout=self.timeout_seconds)
        return response.status_code


def failure_alert(run: dg.DagsterRun, error: str | None) -> dict:
    minutes = describe_partitions(run.tags)
    text = f"jam-etl: run {run.run_id[:8]} of {run.job_name} failed" + (f" for {minutes}" if minutes else "")
    if error:
        text += f": {error.strip().splitlines()[0][:300]}"
    return {"text": text, "run_id": run.run_id, "job": run.job_name, "minute_files": minutes, "error": error}


def _text(error) -> str:
    """An error's message without the exception's qualified class name in front."""
    head, sep, rest = error.message.partition(": ")
    return rest if sep and error.cls_name and head.endswith(error.cls_name) else error.message


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run of this code location to JAM_ALERT_WEBHOOK.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertWebhook) -> None:
    error = context.failure_event.message
    step_errors = [
        _text(e.step_failure_data.error) for e in context.get_step_failure_events() if e.step_failure_data.error
    ]
    body = failure_alert(context.dagster_run, step_errors[0] if step_errors else error)
    try:
        status = alerts.post(body)
    except requests.RequestException as exc:
        # The exception's text can carry the URL: only its kind is logged.
        context.log.error(f"the alert webhook could not be reached ({type(exc).__name__}); alert was: {body['text']}")
        return
    if status >= 300:
        context.log.error(f"the alert webhook answered HTTP {status}; alert was: {body['text']}")
