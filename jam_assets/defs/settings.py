"""Where the logs are, where the exports go, and the few knobs beyond that."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ..core.envelope import DEFAULT_TEAM_ALIASES
from ..core.quality import DEFAULT_ELAPSED_BANDS, ElapsedBand, QualityBounds

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_LOGS = Path(__file__).resolve().parents[1] / "sample_logs"
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_WATCH_SECONDS = 3600.0


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


class ElapsedBandConfig(dg.Config):
    """Plausible `elapsed` for one table, in microseconds (see jam_assets.core.quality.ElapsedBand)."""

    low: int = 0
    high: int = 0
    ms_below: int = 0
    ns_above: int = 0
    expect_zero: bool = False


class JamSettings(dg.ConfigurableResource):
    """The log root, the export root, how minute files are read and watched, and the check bounds."""

    log_dir: str = str(BUNDLED_LOGS)
    export_dir: str = "dune_exports"
    team_aliases: dict[str, str] = dict(DEFAULT_TEAM_ALIASES)
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    watch_seconds: float = DEFAULT_WATCH_SECONDS
    # Per-table overrides of jam_assets.core.quality.DEFAULT_ELAPSED_BANDS.
    elapsed_bands: dict[str, ElapsedBandConfig] = {}
    time_tolerance_seconds: float = 60.0
    retention_days: float = 60.0
    # Processes that read minute files; 0: one per core this process may use.
    core_workers: int = 0

    def quality_bounds(self) -> QualityBounds:
        bands = {t: ElapsedBand(**b.model_dump()) for t, b in self.elapsed_bands.items()}
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


def parse_team_aliases(text: str) -> dict[str, str]:
    """`JAMDUNA=Jam-Duna,COLORFULNOTION=Colorful Notion` -> a dict; replaces the default map."""
    aliases = {}
    for piece in filter(None, (p.strip() for p in text.split(","))):
        name, sep, alias = piece.partition("=")
        if not sep or not name.strip() or not alias.strip():
            raise SettingsError(f"JAM_TEAM_ALIASES: {piece!r} is not NAME=Alias (pairs are separated by commas)")
        aliases[name.strip()] = alias.strip()
    return aliases


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number of seconds") from None
    if value < 0:
        raise SettingsError(f"{name}={text!r} must not be negative")
    return value


def _workers(name: str) -> int:
    text = (os.environ.get(name) or "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{name}={text!r} must be a whole number of processes, at least 1")
    return int(text)


def settings_from_env() -> JamSettings:
    """JAM_LOG_DIR, JAM_EXPORT_DIR, JAM_TEAM_ALIASES, JAM_GRACE_SECONDS, JAM_WATCH_SECONDS,
    JAM_RETENTION_DAYS, JAM_CORE_WORKERS, with defaults.

    Paths are made absolute here, so the webserver, the daemon and run workers agree whatever
    folder each starts in.
    """
    aliases = os.environ.get("JAM_TEAM_ALIASES")
    return JamSettings(
        log_dir=str(Path(os.environ.get("JAM_LOG_DIR") or BUNDLED_LOGS).expanduser().resolve()),
        export_dir=str(Path(os.environ.get("JAM_EXPORT_DIR") or "dune_exports").expanduser().resolve()),
        team_aliases=parse_team_aliases(aliases) if aliases is not None else dict(DEFAULT_TEAM_ALIASES),
        grace_seconds=_seconds("JAM_GRACE_SECONDS", DEFAULT_GRACE_SECONDS),
        watch_seconds=_seconds("JAM_WATCH_SECONDS", DEFAULT_WATCH_SECONDS),
        retention_days=_seconds("JAM_RETENTION_DAYS", 60.0),
        core_workers=_workers("JAM_CORE_WORKERS"),
    )
