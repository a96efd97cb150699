"""Server settings: a TOML file, then ``HELPLINE_*`` environment variables on top.

Settings are a typed object made by :func:`load_settings`; it refuses to run
with the default secret unless the server is started in development mode.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from protocol.errors import ConfigError
from server.forwarding import parse_networks

DEFAULT_SECRET = "change-me"
CONFIG_FILE_NAME = "server.toml"


class ResponsePolicy(BaseModel):
    """Minutes until the first response is due, per ticket priority."""

    urgent: int = Field(default=60, gt=0)
    high: int = Field(default=120, gt=0)
    normal: int = Field(default=240, gt=0)
    low: int = Field(default=1440, gt=0)

    def minutes_for(self, priority: str) -> int:
        return int(getattr(self, priority))


class RateLimits(BaseModel):
    """Failed attempts allowed before requests are refused or slowed (429 with Retry-After).

    Only counts of one client address (an IPv4 address or an IPv6 /64) refuse
    outright; counts over many addresses slow only the addresses that have
    failed before, so nobody can lock others out (docs/threat-model.md has the
    arithmetic). Names of earlier versions are still read.
    """

    # Wrong passwords for one username from one address, per window: then that address waits for that username.
    login_per_user_address: int = Field(default=10, ge=1, validation_alias=AliasChoices("login_per_user_address", "login_per_user"))
    # Wrong passwords from one address for any usernames, per window: then that address waits.
    login_per_address: int = Field(default=30, ge=1, validation_alias=AliasChoices("login_per_address", "login_per_ip"))
    # Wrong passwords for one username from all addresses, per window, before the addresses that failed are slowed ...
    login_per_user_free: int = Field(default=10, ge=1)
    # ... to one wrong attempt per this many seconds for that username, all of them together.
    login_user_slow_seconds: int = Field(default=5, ge=1, le=60)
    # Wrong passwords for one username from one IPv6 /48 before its other /64s count as addresses that failed.
    login_network_clean: int = Field(default=10, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    # Wrong pairing codes from one address, per window: then that address waits.
    pairing_per_address: int = Field(default=10, ge=1, validation_alias=AliasChoices("pairing_per_address", "pairing_per_ip"))
    # Wrong codes from one IPv6 /48 before its other /64s count as addresses that failed.
    pairing_network_clean: int = Field(default=10, ge=1)
    # Wrong codes per second from all addresses that failed before, together: more wait a second.
    pairing_suspects_per_second: int = Field(default=1, ge=1)
    pairing_window_seconds: int = Field(default=600, ge=1)
    # Pairing codes live (unused, unexpired) at once on this server; the guessing odds grow with it.
    pairing_live_codes: int = Field(default=100, ge=1)
    enroll_per_ip: int = 20
    enroll_window_seconds: int = 600
    self_service_per_ip: int = 10
    # Tickets one PC's credential may open per window (counted when opened, not only when refused).
    self_service_per_agent: int = Field(default=10, ge=1)
    self_service_window_seconds: int = 3600


class BlobSettings(BaseModel):
    """Where blobs (bundles, upload chunks, later recordings and snapshot data) are kept.

    ``[blobs]`` in server.toml, ``HELPLINE_BLOBS__<NAME>`` in the environment. The
    ``s3_*`` settings apply to the ``s3`` backend only; S3 credentials left unset
    come from boto3's usual chain (environment, instance role).
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "s3"] = "local"
    dir: Path | None = None  # default: data_dir/blobs
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_prefix: str = ""


class UploadSettings(BaseModel):
    """Quotas that keep one PC, or all of them together, from filling the server's storage.

    ``[uploads]`` in server.toml, ``HELPLINE_UPLOADS__<NAME>`` in the environment.
    An upload reserves its whole size when it starts; reservations are counted
    against the quotas inside the write transaction, so parallel starts cannot
    overshoot them. Unfinished uploads that see no chunk for ``idle_minutes``
    expire (and stop counting at once); the upload sweep deletes their chunks.
    """

    model_config = ConfigDict(extra="forbid")

    max_unfinished_per_pc: int = Field(default=4, ge=1)
    max_unfinished_bytes_per_pc: int = Field(default=1 << 30, gt=0)  # reserved by one PC's unfinished uploads
    max_stored_bytes_per_pc: int = Field(default=10 << 30, gt=0)  # bundles kept plus reservations, per PC
    max_unfinished_bytes: int = Field(default=16 << 30, gt=0)  # reserved by every unfinished upload together
    max_stored_bytes: int | None = Field(default=None, gt=0)  # bundles plus reservations over all PCs (set it for S3)
    min_free_bytes: int = Field(default=1 << 30, ge=0)  # local blob store: free disk kept beyond all reservations
    idle_minutes: float = Field(default=15.0, gt=0)


class SessionSettings(BaseModel):
    """Remote sessions: who the user is told is asking, how long passes last, and who may replay recordings.

    ``[sessions]`` in server.toml, ``HELPLINE_SESSIONS__<NAME>`` in the environment.
    """

    model_config = ConfigDict(extra="forbid")

    # The organisation the user's consent prompt names (signed into every grant); default: the server's host name.
    organisation: str = Field(default="", max_length=200)
    # Grants one engineer may ask for per hour (each asks a user to consent; a flood would pester them).
    grants_per_engineer_per_hour: int = Field(default=30, ge=1)
    # How long a one-time relay pass lasts before it is used.
    relay_token_seconds: int = Field(default=120, ge=10, le=900)
    # The largest recording a PC may attach (asciicast v2, output only by default).
    max_recording_bytes: int = Field(default=64 << 20, gt=0, le=4 << 30)
    # Who may download a recording: the ticket's assignee (and admins), every engineer, or admins only.
    recordings_readable_by: Literal["assignee", "engineers", "admins"] = "assignee"
    # Recordings older than this are no longer handed out (and may be swept).
    recording_retention_days: int = Field(default=90, ge=1)


class RetentionPolicy(BaseModel):
    """How many snapshots the server's prune keeps per agent (restic forget's --keep-* options)."""

    model_config = ConfigDict(extra="forbid")

    hourly: int = Field(default=24, ge=0, le=10_000)
    daily: int = Field(default=7, ge=0, le=10_000)
    weekly: int = Field(default=4, ge=0, le=10_000)
    monthly: int = Field(default=0, ge=0, le=10_000)
    yearly: int = Field(default=0, ge=0, le=10_000)

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionPolicy:
        if not any((self.hourly, self.daily, self.weekly, self.monthly, self.yearly)):
            raise ValueError("a retention policy must keep at least one snapshot (set hourly, daily, weekly, "
                             "monthly or yearly above 0)")
        return self


def http_base_url(value: str | None) -> str | None:
    """A setting that names a server by its base URL: http(s), no credentials, query or fragment; no final slash."""
    if value is None:
        return value
    if not value.startswith(("http://", "https://")) or "@" in value or "?" in value or "#" in value:
        raise ValueError("must be an http:// or https:// base URL without credentials, query or fragment")
    return value.rstrip("/")


class SnapshotSettings(BaseModel):
    """The server-side restic repositories (one per agent, append-only for the agent, pruned by the server),
    escrow of repository passwords, and when a PC counts as not protected.

    ``[snapshots]`` in server.toml, ``HELPLINE_SNAPSHOTS__<NAME>`` in the environment.
    With ``escrow`` on, PCs hand the server their repository password (kept
    encrypted with a key derived from the server's signing key) so an engineer
    can restore onto a replacement PC; the server can then read every PC's
    snapshots. With it off, the server refuses passwords and deletes those it
    holds (the ``escrow-purge`` job), and only each PC can read its snapshots.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: no credentials are issued and the REST repositories answer 503
    # Escrow of each PC's repository password (encrypted at rest); with it the server can read snapshots.
    escrow: bool = True
    backup_credential_minutes: float = Field(default=120.0, gt=0, le=7 * 24 * 60)  # purposes backup and check
    restore_credential_minutes: float = Field(default=480.0, gt=0, le=7 * 24 * 60)
    admin_credential_minutes: float = Field(default=240.0, gt=0, le=7 * 24 * 60)  # the server's own, for prune
    quota_bytes: int = Field(default=100 << 30, gt=0)  # one agent's repository, trash not counted
    trash_days: float = Field(default=7.0, ge=0)  # what the server's prune deletes is kept this long; 0: at once
    prune_interval_hours: float = Field(default=168.0, gt=0)  # how often each repository is pruned
    prune_check_minutes: float = Field(default=15.0, gt=0)  # how often the prune job looks for due repositories
    retention: RetentionPolicy = RetentionPolicy()
    # The base URL PCs reach this server by, for repository URLs; default: the one the PC's request came to.
    public_url: str | None = None
    # The base URL the server's own restic reaches the repositories by; default: http(s)://host:port (loopback
    # when the server listens on every address).
    local_url: str | None = None
    restic: str = "restic"  # the restic binary the prune job runs
    # A PC without a good snapshot for this long is "stale" (not protected).
    stale_after_hours: float = Field(default=26.0, gt=0)
    # A PC whose last verified sample restore is older than this is "unverified".
    unverified_after_days: float = Field(default=8.0, gt=0)
    # An engineer's restore runs on a PC without its user's consent (the admin's allowance; never a shell).
    unattended_restore: bool = False
    # How often an engineer's request to a PC that nobody ran before its expiry is marked expired.
    request_sweep_seconds: float = Field(default=60.0, gt=0)
    # How often a waiting long poll looks in the database besides its in-process wake-up (other replicas).
    request_poll_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("public_url", "local_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_base_url(value)


class WebhookSettings(BaseModel):
    """Signed webhooks on ticket events: delivery pace, retries and which addresses endpoints may have.

    ``[webhooks]`` in server.toml, ``HELPLINE_WEBHOOKS__<NAME>`` in the environment. Each delivery is
    retried with exponential back-off and jitter (``backoff_seconds`` doubling up to ``backoff_max_seconds``)
    until ``max_attempts`` or ``max_age_hours``, then marked failed (``helpline webhook deliveries --failed``).
    """

    model_config = ConfigDict(extra="forbid")

    # How often the delivery job looks for events due to be sent (seconds).
    deliver_seconds: float = Field(default=10.0, gt=0)
    # Connect and read timeout of one delivery (seconds); redirects are never followed.
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=8, ge=1, le=50)
    max_age_hours: float = Field(default=24.0, gt=0)
    backoff_seconds: float = Field(default=30.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # Deliveries sent per run of the job (the rest wait for the next run).
    batch: int = Field(default=50, ge=1, le=1000)
    # Endpoints on loopback, private, link-local or otherwise non-public addresses are refused unless this is
    # true (a helpdesk on the internal network needs it): the server must not be a way into its own network.
    allow_private_networks: bool = False
    # A ticket's first response is "due soon" this many minutes before it is due.
    due_soon_minutes: float = Field(default=30.0, gt=0)
    # How often the deadline job looks for tickets whose first response is due soon or overdue.
    deadline_check_seconds: float = Field(default=60.0, gt=0)
    # The base URL engineers reach this server by, for links in payloads (none: payloads carry no links).
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_base_url(value)


class MetricsSettings(BaseModel):
    """``GET /metrics`` (Prometheus text format): readable with the bearer token in ``token_file`` or an admin's token.

    ``[metrics]`` in server.toml, ``HELPLINE_METRICS__<NAME>`` in the environment.
    """

    model_config = ConfigDict(extra="forbid")

    # A file holding the scrape token (one line, at least 32 characters); none: only admins' API tokens read /metrics.
    token_file: Path | None = None


class RetentionSettings(BaseModel):
    """How long the server keeps what piles up; the ``retention`` job deletes what is older, audited.

    ``[retention]`` in server.toml, ``HELPLINE_RETENTION__<NAME>`` in the environment. None keeps for ever.
    Session recordings keep their setting, ``[sessions] recording_retention_days`` (the ``session-sweep`` job).
    """

    model_config = ConfigDict(extra="forbid")

    # Diagnostic bundles (and the reply attachments beside them) older than this many days are deleted.
    bundles_days: float | None = Field(default=None, gt=0)
    # The server-side snapshots of a PC whose agent was revoked (or retired) this many days ago go to the
    # snapshot trash (gone for good after [snapshots] trash_days). None: kept, e.g. for a replacement restore.
    revoked_snapshots_days: float | None = Field(default=None, gt=0)
    # Webhook events and their deliveries (delivered or failed) older than this many days are deleted.
    webhook_days: float = Field(default=30.0, ge=8)  # at least the 7 days the deadline job looks back
    # How often the retention job runs.
    check_minutes: float = Field(default=60.0, gt=0)


class KeySettings(BaseModel):
    """The server's signing key rotation (``helpline server rotate-key``).

    ``[keys]`` in server.toml, ``HELPLINE_KEYS__<NAME>`` in the environment.
    """

    model_config = ConfigDict(extra="forbid")

    # How long agents follow a hand-over from a retired key: a PC offline longer than this after a rotation
    # no longer trusts the server and must be enrolled or paired again.
    handover_days: float = Field(default=365.0, gt=0, le=3650)


class BusSettings(BaseModel):
    """Several server processes as one: the doorbell across processes and the relay's forwards between them.

    ``[bus]`` in server.toml, ``HELPLINE_BUS__<NAME>`` in the environment. On
    PostgreSQL every process listens on one LISTEN/NOTIFY channel, so a change
    committed by one process wakes the long polls held by another at once. On
    SQLite there is no bus: SQLite means one server process.
    """

    model_config = ConfigDict(extra="forbid")

    # Off: no LISTEN/NOTIFY; long polls then look in the database every few seconds for other processes' changes.
    enabled: bool = True
    # The PostgreSQL channel the processes of one deployment share (one per deployment if several share a database).
    channel: str = Field(default="helpline_doorbell", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # While the doorbell hears every change, a waiting long poll still looks in the database this often,
    # so a notification lost on the way is late, never fatal.
    safety_look_seconds: float = Field(default=45.0, ge=1, le=3600)
    # The longest pause between attempts to reconnect the listening connection (doubling from 0.5 s).
    reconnect_max_seconds: float = Field(default=30.0, ge=0.5, le=600)
    # How the other server processes reach this one's internal relay endpoint (http:// or https:// base URL);
    # default: http(s)://host:port of the bind address (this host's name when it listens on every address).
    advertise_url: str | None = None
    # How long a replica's forward pass (signed by the server key, bound to one session, side and replica) lasts.
    forward_token_seconds: int = Field(default=30, ge=5, le=300)

    @field_validator("advertise_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return http_base_url(value)


#: The flat spellings of the blob settings before ``[blobs]``, still read (file and
#: environment) and folded into ``blobs``: old name -> name in BlobSettings.
FLAT_BLOB_SETTINGS = {
    "blob_backend": "backend",
    "blob_dir": "dir",
    "s3_bucket": "s3_bucket",
    "s3_endpoint_url": "s3_endpoint_url",
    "s3_region": "s3_region",
    "s3_access_key": "s3_access_key",
    "s3_secret_key": "s3_secret_key",
    "s3_prefix": "s3_prefix",
}


class FleetSettings(BaseModel):
    """The fleet of enrolled PCs: when one counts as offline, and how a cloned identity is told apart.

    ``[fleet]`` in server.toml, ``HELPLINE_FLEET__<NAME>`` in the environment.
    An agent signs each request with its instance (one installation on one
    boot): when an agent's requests come from one instance, then another, then
    the first again within ``clone_window_minutes``, its key runs on two PCs at
    once and the agent is quarantined. A restart (a new instance, the old one
    gone) is never that.
    """

    offline_after_minutes: float = Field(default=24 * 60, gt=0)
    clone_window_minutes: float = Field(default=30, gt=0, le=24 * 60)


class _FlatBlobEnvironment(PydanticBaseSettingsSource):
    """Read the flat ``HELPLINE_BLOB_*``/``HELPLINE_S3_*`` variables, which name no field any more."""

    def get_field_value(self, field, field_name):  # pragma: no cover - values come from __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        return {old: environ[f"HELPLINE_{old.upper()}"] for old in FLAT_BLOB_SETTINGS if f"HELPLINE_{old.upper()}" in environ}


def _fold_flat_blob_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Move the flat blob settings in ``values`` into ``values["blobs"]``.

    Raise ValueError (naming both spellings) if a flat setting and its ``blobs`` twin disagree.
    """
    flat = {old: values.pop(old) for old in list(values) if old in FLAT_BLOB_SETTINGS}
    if not flat:
        return values
    blobs = values.get("blobs")
    blobs = blobs.model_dump(exclude_unset=True) if isinstance(blobs, BlobSettings) else dict(blobs or {})
    for old, value in flat.items():
        new = FLAT_BLOB_SETTINGS[old]
        if new in blobs and str(blobs[new]) != str(value):
            raise ValueError(f"{old} = {value!r} disagrees with blobs.{new} = {blobs[new]!r}; keep only blobs.{new}")
        blobs[new] = value
    values["blobs"] = blobs
    return values


class ServerSettings(BaseSettings):
    """Everything the server needs; see deploy/server.toml.example for a commented file."""

    model_config = SettingsConfigDict(env_prefix="HELPLINE_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("/var/lib/helpline")
    database_url: str | None = None  # default: SQLite file in data_dir
    secret_key: str = DEFAULT_SECRET
    signing_key_file: Path | None = None  # default: data_dir/server-signing-key.pem
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For is believed; none by default, so a
    # local process cannot pick the address it is counted and audited under.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    blobs: BlobSettings = BlobSettings()
    uploads: UploadSettings = UploadSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    sessions: SessionSettings = SessionSettings()
    bus: BusSettings = BusSettings()
    fleet: FleetSettings = FleetSettings()
    self_service: Literal["off", "enrolled", "anyone"] = "enrolled"
    self_service_priority: Literal["urgent", "high", "normal", "low"] = "normal"
    # Self-service tickets one PC may have open (not resolved or closed) at once.
    self_service_open_per_agent: int = Field(default=3, ge=1)
    response_policy: ResponsePolicy = ResponsePolicy()
    rate_limits: RateLimits = RateLimits()
    token_ttl_hours: float = Field(default=12.0, gt=0)
    pairing_code_ttl_minutes: float = Field(default=10.0, gt=0, le=60)
    ticket_number_start: int = Field(default=1001, ge=1)
    max_request_bytes: int = Field(default=1 << 20, gt=0)
    max_bundle_bytes: int = Field(default=512 << 20, gt=0)
    upload_chunk_bytes: int = Field(default=4 << 20, ge=64 << 10, le=64 << 20)
    upload_ttl_hours: float = Field(default=24.0, gt=0)  # the longest an unfinished upload lives, however active
    upload_sweep_seconds: float = Field(default=60.0, gt=0)  # how often expired, unfinished uploads are removed
    # Requests use at most database_pool_size connections at once (more wait their turn, holding nothing);
    # the overflow serves background jobs and upload steps. Blocking work runs on worker_threads threads.
    database_pool_size: int = Field(default=20, ge=1, le=1000)
    database_pool_overflow: int = Field(default=10, ge=1, le=1000)
    worker_threads: int = Field(default=40, ge=1, le=1000)
    # Password checks (scrypt: CPU and 16 MiB each) running at once; the rest queue holding no database
    # connection, so a flood of failed logins leaves CPUs for everything else. Default: half the CPUs.
    password_check_threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    dev: bool = False
    # hooks (fleet issue): webhooks, /metrics, retention
    webhooks: WebhookSettings = WebhookSettings()
    metrics: MetricsSettings = MetricsSettings()
    retention: RetentionSettings = RetentionSettings()
    keys: KeySettings = KeySettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _FlatBlobEnvironment(settings_cls), dotenv_settings, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _blob_settings_in_one_place(cls, values: Any) -> Any:
        return _fold_flat_blob_settings(values) if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _blob_dir_in_data_dir(self) -> ServerSettings:
        if self.blobs.dir is None:
            self.blobs = self.blobs.model_copy(update={"dir": self.data_dir / "blobs"})
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_are_networks(cls, value: Any) -> Any:
        if isinstance(value, str):  # HELPLINE_TRUSTED_PROXIES="10.0.0.5, 10.1.0.0/16" or a JSON list
            try:
                value = json.loads(value) if value.lstrip().startswith("[") else value.replace(",", " ").split()
            except json.JSONDecodeError:
                raise ValueError("must be addresses or networks separated by commas, or a JSON list") from None
        if isinstance(value, list | tuple):
            parse_networks(tuple(str(v) for v in value))
        return value

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, values: Any) -> Any:
        if isinstance(values, dict) and "forwarded_allow_ips" in values:
            raise ValueError("forwarded_allow_ips is replaced by trusted_proxies, a list of proxy addresses or networks "
                             "(none is trusted by default)")
        return values

    @field_validator("secret_key")
    @classmethod
    def _secret_long_enough(cls, value: str) -> str:
        if value != DEFAULT_SECRET and len(value) < 32:
            raise ValueError("must be at least 32 characters (use `helpline server init` to generate one)")
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'helpline.db'}"

    @property
    def resolved_advertise_url(self) -> str:
        """The base URL other server processes reach this one by (``[bus] advertise_url``, else the bind address)."""
        if self.bus.advertise_url:
            return self.bus.advertise_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{'https' if self.tls_cert_file else 'http'}://{host}:{self.port}"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "server-signing-key.pem"

    def refuse_insecure_defaults(self) -> None:
        """Raise ConfigError if a default secret would be used outside development."""
        if self.dev:
            return
        if self.secret_key == DEFAULT_SECRET:
            raise ConfigError(
                "The server's secret_key is the default.",
                hint="Run `helpline server init` to generate one, set HELPLINE_SECRET_KEY, or start with --dev for local trials.",
            )
        if self.blobs.backend == "s3" and not self.blobs.s3_bucket:
            raise ConfigError("S3 blob storage needs blobs.s3_bucket.", hint="Credentials may come from blobs.s3_access_key "
                              "and blobs.s3_secret_key, or from the environment or instance role as boto3 finds them.")


def read_config_file(path: Path) -> dict[str, Any]:
    """Return the settings in a TOML file; raise ConfigError if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file {path} does not exist.", hint="Run `helpline server init` first.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from exc


def default_config_path(data_dir: Path | None = None) -> Path:
    env = os.environ.get("HELPLINE_CONFIG")
    if env:
        return Path(env)
    base = data_dir or Path(os.environ.get("HELPLINE_DATA_DIR", "/var/lib/helpline"))
    return base / CONFIG_FILE_NAME


def load_settings(config_path: Path | None = None, **overrides: Any) -> ServerSettings:
    """Build settings from the file (if given or present), env vars and overrides.

    Precedence: explicit overrides > environment > file > defaults. Raise
    ConfigError naming the offending setting if any value is invalid.
    """
    file_values: dict[str, Any] = {}
    if config_path is not None:
        file_values = read_config_file(config_path)
    overrides = {k: v for k, v in overrides.items() if v is not None}

    class _FromFile(ServerSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, _FlatBlobEnvironment(settings_cls), lambda: file_values)

    try:
        settings = _FromFile(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if not where:  # a check across settings, such as the two spellings of a blob setting
            raise ConfigError(f"Invalid server settings: {first['msg'].removeprefix('Value error, ')}.") from exc
        raise ConfigError(f"Invalid server setting {where}: {first['msg']}.") from exc
    return ServerSettings.model_construct(**settings.__dict__)
