"""Settings: one frozen dataclass, read once at start-up from ``MPI_*`` variables and flags.

Every field has a default and a help string; ``Settings.from_env`` validates them and
raises ``SettingsError`` with one readable line, which the CLIs print before exiting 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QR_POSITIONS", "QR_SIZES", "Settings", "SettingsError"]

QR_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
QR_SIZES = ("small", "standard", "large")


class SettingsError(ValueError):
    """A setting with a value that cannot work."""


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: str = _setting("./mpi-data", "node: folder holding mpi.sqlite3 and the node key")
    database_url: str = _setting("", "hub: PostgreSQL URL, e.g. postgresql://postgres@127.0.0.1:5432/mpi")
    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(8080, "port to listen on")
    certain_threshold: float = _setting(0.95, "score at or above which register answers 409 duplicate_detected")
    probable_threshold: float = _setting(0.85, "score at or above which a match is 'probable'")
    possible_threshold: float = _setting(0.70, "score at or above which a match is 'possible' (lowest reported)")
    matcher: str = _setting("learned", "learned (gradient-boosted trees, the shipped model) or fellegi_sunter (the previous scorer)")
    candidate_limit: int = _setting(30, "most candidates scored for one query (the best by what they share with it)")
    max_body_bytes: int = _setting(262_144, "largest request body accepted; larger ones answer 413")
    body_timeout_seconds: float = _setting(30.0, "longest a client may take to send a request body; slower ones answer 408")
    verify_rate_per_minute: int = _setting(60, "per client address: most GET /mpi/verify requests a minute, then 429 (0: no limit)")
    enroll_rate_per_minute: int = _setting(10, "hub, per client address: most POST /sync/enroll requests a minute, then 429 (0: no limit)")
    auth_failures_per_minute: int = _setting(
        10, "per client address: most failed authentications a minute, then 429 even for a good token (0: no limit)"
    )
    sqlite_synchronous: str = _setting("FULL", "SQLite synchronous pragma: FULL survives power loss, NORMAL only a crash")
    qr_enabled: bool = _setting(True, "whether cards carry a QR code")
    qr_position: str = _setting("bottom-right", "where the QR sits on the printed card")
    qr_size: str = _setting("standard", "QR size on the printed card: small, standard or large")
    audit_flush_seconds: float = _setting(0.25, "how long audit records of reads may wait before they are written")
    sync_interval_seconds: float = _setting(60.0, "node: how often the node syncs with the hub when it is reachable")
    sync_max_backoff_seconds: float = _setting(900.0, "node: longest wait between two failed sync attempts")
    sync_timeout_seconds: float = _setting(30.0, "node: longest one sync request may take before it counts as cut")
    sync_request_seconds: float = _setting(5.0, "node: aimed duration of one sync request; batches follow the link speed")
    sync_batch_max: int = _setting(1000, "node: most changes in one change set")
    max_clock_skew_seconds: float = _setting(300.0, "hub: how far ahead of the hub's clock a change may be stamped")
    auto_merge_threshold: float = _setting(0.99, "hub: score at or above which dedup merges a pair with no hard conflict")
    dedup_interval_seconds: float = _setting(5.0, "hub: how often new registrations from nodes are checked (0: only on demand, POST /dedup/run)")
    dedup_sweep_hours: float = _setting(24.0, "hub: hours between two full dedup sweeps (0: never by itself)")
    dedup_in_serve: bool = _setting(
        True, "hub: whether mpi-hub serve runs dedup itself; false when mpi-hub dedup worker processes do "
        "(serve then only cuts the periodic sweep into slices for them)"
    )
    # repr=False: a printed or logged Settings never shows the secret.
    hub_key_secret: str = field(default="", repr=False, metadata={
        "help": "hub: secret (32+ characters) sealing the hub's signing key; else hub_key_file"})
    hub_key_file: str = _setting("", "hub: file holding the key that seals the hub's signing key "
                                 "(default ~/.config/mpi/hub.key; mpi-hub init makes it)")
    fhir_base_url: str = _setting("", "FHIR: public base URL for Location and Bundle links (empty: the request's own host)")
    fhir_mpi_id_system: str = _setting("https://api.oomus.health/fhir/sid/mpi-id", "FHIR: identifier system of the MPI ID")
    fhir_dhis2_system: str = _setting("https://dhis2.sante.gov.sn", "FHIR: identifier system of DHIS2 UIDs, naming the DHIS2 instance")
    fhir_identifier_base: str = _setting("https://api.oomus.health/fhir/sid/", "FHIR: system of any other external id: this prefix + its name")
    console_idle_minutes: float = _setting(30.0, "console: minutes without activity after which a console session ends")
    console_session_hours: float = _setting(12.0, "console: longest a console session lasts, however active, before signing in again")
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting("json", "json (one object a line) or text")

    def __post_init__(self) -> None:
        if not 0 < self.possible_threshold <= self.probable_threshold <= self.certain_threshold <= 1:
            raise SettingsError("thresholds must satisfy 0 < possible <= probable <= certain <= 1")
        if not 0 < self.port < 65536:
            raise SettingsError(f"port must be 1..65535, not {self.port}")
        if self.matcher not in ("learned", "fellegi_sunter"):
            raise SettingsError("matcher must be learned or fellegi_sunter")
        if self.candidate_limit < 1:
            raise SettingsError("candidate_limit must be at least 1")
        if self.max_body_bytes < 1024:
            raise SettingsError("max_body_bytes must be at least 1024")
        if self.body_timeout_seconds <= 0:
            raise SettingsError("body_timeout_seconds must be positive")
        if self.verify_rate_per_minute < 0 or self.auth_failures_per_minute < 0 or self.enroll_rate_per_minute < 0:
            raise SettingsError("rate limits must be 0 (no limit) or more")
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise SettingsError("sqlite_synchronous must be FULL, NORMAL or EXTRA")
        if self.qr_position not in QR_POSITIONS:
            raise SettingsError(f"qr_position must be one of {', '.join(QR_POSITIONS)}")
        if self.qr_size not in QR_SIZES:
            raise SettingsError(f"qr_size must be one of {', '.join(QR_SIZES)}")
        if self.sync_interval_seconds <= 0 or self.sync_timeout_seconds <= 0 or self.sync_request_seconds <= 0:
            raise SettingsError("sync intervals and timeouts must be positive")
        if self.sync_max_backoff_seconds <= 0:
            raise SettingsError("sync_max_backoff_seconds must be positive")
        if not 1 <= self.sync_batch_max <= 10_000:
            raise SettingsError("sync_batch_max must be 1..10000")
        if self.max_clock_skew_seconds < 1:
            raise SettingsError("max_clock_skew_seconds must be at least 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("log_level must be DEBUG, INFO, WARNING or ERROR")
        if not self.probable_threshold <= self.auto_merge_threshold <= 1:
            raise SettingsError("auto_merge_threshold must be between probable_threshold and 1")
        if self.dedup_interval_seconds < 0 or self.dedup_sweep_hours < 0:
            raise SettingsError("dedup_interval_seconds and dedup_sweep_hours must be >= 0")
        if self.hub_key_secret and len(self.hub_key_secret) < 32:
            raise SettingsError("hub_key_secret must be at least 32 characters (random ones)")
        for name in ("fhir_mpi_id_system", "fhir_dhis2_system", "fhir_identifier_base"):
            if not re.match(r"^(https?://|urn:)\S+$", getattr(self, name)):
                raise SettingsError(f"{name} must be an absolute URI (http(s):// or urn:)")
        if len({self.fhir_mpi_id_system, self.fhir_dhis2_system, self.fhir_identifier_base}) < 3:
            raise SettingsError("the FHIR identifier systems must differ from each other")
        if self.fhir_base_url and not re.match(r"^https?://\S+$", self.fhir_base_url):
            raise SettingsError("fhir_base_url must be empty or an http(s):// URL")
        if not 0 < self.console_idle_minutes <= 7 * 24 * 60:
            raise SettingsError("console_idle_minutes must be more than 0 and at most a week")
        if not 0 < self.console_session_hours <= 7 * 24:
            raise SettingsError("console_session_hours must be more than 0 and at most a week")
        if self.log_format not in ("json", "text"):
            raise SettingsError("log_format must be json or text")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``MPI_<FIELD>`` variables, then explicit overrides (flags) that are not None."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"MPI_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise SettingsError(str(exc)) from None

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, help) for every setting: the README table and ``--help`` come from here."""
        return [(f"MPI_{f.name.upper()}", f.default, f.metadata["help"]) for f in dataclasses.fields(cls)]


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"MPI_{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
    return raw
