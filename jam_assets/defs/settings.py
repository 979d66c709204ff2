"""Where the logs are, where the exports go, and the few knobs beyond that.

Every setting comes from the environment through `dg.EnvVar`, so the UI shows the variable's name
and the value is read where the run executes. Values are also checked here, when the code
location loads, so a bad one stops it with a message naming the variable, not a run an hour later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import dagster as dg

from ..core.envelope import DEFAULT_TEAM_ALIASES
from ..core.quality import DEFAULT_ELAPSED_BANDS, ElapsedBand, QualityBounds

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_LOGS = Path(__file__).resolve().parents[1] / "sample_logs"
DEFAULT_EXPORT_DIR = "dune_exports"
DEFAULT_GRACE_SECONDS = 10
DEFAULT_WATCH_SECONDS = 3600
DEFAULT_RETENTION_DAYS = 60


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


def format_team_aliases(aliases: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in aliases.items())


def parse_team_aliases(text: str) -> dict[str, str]:
    """`JAMDUNA=Jam-Duna,COLORFULNOTION=Colorful Notion` -> a dict; replaces the default map."""
    aliases = {}
    for piece in filter(None, (p.strip() for p in text.split(","))):
        name, sep, alias = piece.partition("=")
        if not sep or not name.strip() or not alias.strip():
            raise SettingsError(f"JAM_TEAM_ALIASES: {piece!r} is not NAME=Alias (pairs are separated by commas)")
        aliases[name.strip()] = alias.strip()
    return aliases


class JamSettings(dg.ConfigurableResource):
    """The log root, the export root, how minute files are read and watched, and the check bounds."""

    log_dir: str = str(BUNDLED_LOGS)
    export_dir: str = DEFAULT_EXPORT_DIR
    # NAME=Alias pairs, comma-separated (JAM_TEAM_ALIASES)
    team_aliases_text: str = format_team_aliases(DEFAULT_TEAM_ALIASES)
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    watch_seconds: int = DEFAULT_WATCH_SECONDS
    # Per-table overrides of jam_assets.core.quality.DEFAULT_ELAPSED_BANDS, each with the fields of
    # quality.ElapsedBand, e.g. {"tickets": {"low": 1000, "high": 90000000, "ms_below": 1000, "ns_above": 90000000}}.
    elapsed_bands: dict[str, dict[str, int]] = {}
    time_tolerance_seconds: int = 60
    retention_days: int = DEFAULT_RETENTION_DAYS
    # 0: keep every export; else delete export files of minutes older than this many days.
    export_retention_days: int = 0
    # Processes that read minute files; 0: one per core this process may use.
    core_workers: int = 0
    # A team is ranked on a metric of a day with at least this many values (JAM_LEADERBOARD_MIN_VALUES).
    leaderboard_min_values: int = 10

    @property
    def team_aliases(self) -> dict[str, str]:
        return parse_team_aliases(self.team_aliases_text)

    def quality_bounds(self) -> QualityBounds:
        bands = {}
        for table, band in self.elapsed_bands.items():
            fields: dict[str, Any] = {k: bool(v) if k == "expect_zero" else v for k, v in band.items()}
            try:
                bands[table] = ElapsedBand(**fields)
            except TypeError as exc:
                raise SettingsError(
                    f"elapsed_bands[{table!r}]: {exc} (fields: low, high, ms_below, ns_above, expect_zero)"
                ) from None
        return QualityBounds({**DEFAULT_ELAPSED_BANDS, **bands}, self.time_tolerance_seconds)

    @property
    def log_root(self) -> Path:
        return Path(self.log_dir).expanduser().resolve()

    @property
    def export_root(self) -> Path:
        return Path(self.export_dir).expanduser().resolve()

    def staging_dir(self, run_id: str) -> Path:
        # Inside the export root, so publishing a staged file is a rename on one file system.
        return self.export_root / ".staging" / run_id

    @property
    def duckdb_path(self) -> Path:
        return self.export_root / "jam.duckdb"


class Env:
    """Reads and checks the environment once: each setting becomes a `dg.EnvVar` when it is set."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self.environ = os.environ if environ is None else environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def is_set(self, name: str) -> bool:
        return self.text(name) is not None

    def string(self, name: str, default: str) -> str:
        """The variable (as a `dg.EnvVar`, a str read where the run executes) if set, else `default`."""
        return dg.EnvVar(name) if self.is_set(name) else default

    def optional(self, name: str) -> str | None:
        return dg.EnvVar(name) if self.is_set(name) else None

    def required(self, name: str, because: str) -> str:
        if not self.is_set(name):
            raise SettingsError(f"{name} is not set: {because}")
        return dg.EnvVar(name)

    def whole(self, name: str, default: int, *, minimum: int = 0, unit: str = "a whole number"):
        text = self.text(name)
        if text is None:
            return default
        if not text.strip().isdigit() or int(text) < minimum:
            raise SettingsError(f"{name}={text!r} must be {unit}" + (f", at least {minimum}" if minimum else ""))
        return dg.EnvVar.int(name)

    def choice(self, name: str, choices: tuple[str, ...]):
        """One of `choices` (unset: the first)."""
        text = self.text(name)
        if text is None:
            return choices[0]
        if text not in choices:
            raise SettingsError(f"{name}={text!r} is not one of: {', '.join(choices)}")
        return dg.EnvVar(name)

    def is_on(self, name: str) -> bool:
        """A switch's value, checked: 1/true/yes or 0/false (unset: off). Dagster reads any other text
        as on where the run executes, so a value it would misread stops the code location here."""
        text = (self.text(name) or "0").strip().lower()
        if text not in ("1", "true", "yes", "0", "false"):
            raise SettingsError(f"{name}={text!r} must be 1 or 0")
        return text in ("1", "true", "yes")

    def flag(self, name: str) -> bool:
        """A switch for a resource's bool field: the variable as an int `dg.EnvVar`, which Dagster reads
        into the bool where the run executes (it has no bool EnvVar); False when unset."""
        self.is_on(name)
        return cast(bool, dg.EnvVar.int(name)) if self.is_set(name) else False


def settings_from_env(env: Env | None = None, *, production: bool = False) -> JamSettings:
    """JAM_LOG_DIR, JAM_EXPORT_DIR, JAM_TEAM_ALIASES, JAM_GRACE_SECONDS, JAM_WATCH_SECONDS,
    JAM_RETENTION_DAYS, JAM_EXPORT_RETENTION_DAYS, JAM_CORE_WORKERS.

    Locally the bundled sample logs are the default log root; in production JAM_LOG_DIR is required.
    Relative paths are taken from the folder the Dagster processes start in.
    """
    env = env or Env()
    aliases = env.text("JAM_TEAM_ALIASES")
    if aliases is not None:
        parse_team_aliases(aliases)
    if production:
        log_dir = env.required(
            "JAM_LOG_DIR", "in production the pipeline reads the receiver's log root, never the bundled samples"
        )
    else:
        log_dir = env.string("JAM_LOG_DIR", str(BUNDLED_LOGS))
    return JamSettings(
        log_dir=log_dir,
        export_dir=env.string("JAM_EXPORT_DIR", DEFAULT_EXPORT_DIR),
        team_aliases_text=env.string("JAM_TEAM_ALIASES", format_team_aliases(DEFAULT_TEAM_ALIASES)),
        grace_seconds=env.whole("JAM_GRACE_SECONDS", DEFAULT_GRACE_SECONDS, unit="a whole number of seconds"),
        watch_seconds=env.whole("JAM_WATCH_SECONDS", DEFAULT_WATCH_SECONDS, unit="a whole number of seconds"),
        retention_days=env.whole(
            "JAM_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=1, unit="a whole number of days"
        ),
        export_retention_days=env.whole("JAM_EXPORT_RETENTION_DAYS", 0, unit="a whole number of days (0: keep)"),
        core_workers=env.whole("JAM_CORE_WORKERS", 0, minimum=1, unit="a whole number of processes"),
        leaderboard_min_values=env.whole("JAM_LEADERBOARD_MIN_VALUES", 10, minimum=1, unit="a whole number of values"),
    )
