"""Configuration: ``CAAS_*`` environment variables, read once into one object.

Tests build ``Settings`` from their own mapping; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAAS_", extra="ignore")

    backend: Literal["embedded", "kafka"] = "embedded"
    data_dir: Path = Path(".caas-data")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None,
        description="the address clients reach the API at (https://chat.example.com); named by /asyncapi.json",
    )
    admin_token: str | None = Field(default=None, description="generated into the data dir when unset")
    secret_key: str | None = Field(default=None, description="signs end-user tokens; generated when unset")
    kafka_bootstrap: str = "127.0.0.1:9092"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_database: str = "caas"
    kafka_topic_prefix: str = "caas."
    kafka_partitions: int = Field(default=1, ge=1, le=1024)
    command_timeout_seconds: float = 5.0
    decider_commit_seconds: float = Field(
        default=0.2, ge=0, description="how often a decider commits its command offsets (README, configuration)"
    )
    mongo_timeout_seconds: float = Field(default=10.0, gt=0)
    projection_stall_seconds: float = Field(default=30.0, gt=0)

    metering: Literal["on", "off"] = "on"
    usage_flush_seconds: float = Field(default=10.0, gt=0, description="how often a node records its usage counts")
    usage_sample_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="every node samples its open sockets at the multiples of this many seconds (the same on all nodes)",
    )

    demo: Literal["on", "off"] = Field(
        default="off", description="on: POST /demo/session hands out demo users' tokens of a demo tenant (api/ui.py)"
    )

    log_level: str = "info"
    access_log: bool = False
    trace_trust_incoming: bool = Field(
        default=False,
        description="a client's traceparent parents the request's span (and sampling); off: a new root, the"
        " client's context kept as a span link",
    )
    metrics_token: str | None = Field(default=None, description="also accepted by /metrics, besides the admin token")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="caas serve: /metrics on this port only (CAAS_METRICS_HOST), not on the public port",
    )
    worker_metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="caas worker: serve /metrics on this port (CAAS_METRICS_HOST)"
    )
    metrics_host: str = Field(default="127.0.0.1", description="the address the metrics ports listen on")
    metrics_tenant_top: int = Field(
        default=20, ge=0, le=1000, description="tenants with a label of their own in the per-tenant counters"
    )
    metrics_tenant_rerank_seconds: float = Field(
        default=300.0, gt=0, description="how often the per-tenant counters' top tenants are chosen again"
    )

    # the HTTP edge (api/connections.py): slow or numerous connections cannot starve other clients
    http_max_connections_per_address: int = Field(default=256, ge=0, description="0: no cap (behind a proxy)")
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)

    max_body_bytes: int = 64 * 1024
    max_text_chars: int = 5000
    max_members: int = 1000
    max_attachments: int = 10
    token_ttl_seconds: int = 3600
    console_session_seconds: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="how long a tenant portal sign-in lasts (docs/console.md)",
    )
    max_token_ttl_seconds: int = 30 * 24 * 3600
    query_wait_seconds: float = 5.0
    asof_cache_mb: float = Field(
        default=256,
        ge=0,
        description="megabytes (estimated) of the channel versions asked with as_of a node keeps in memory; a "
        "channel larger than this alone is refused (422, rule as_of_channel_too_large)",
    )

    analytics_max_docs: int = Field(
        default=50_000,
        ge=1,
        description="read-model documents (user-days or user-months, and channel-days) one GET /v1/analytics reads; "
        "a range holding more is refused 422 range_too_large (docs/analytics.md)",
    )

    rate_limit_scope: Literal["cluster", "node"] = "cluster"
    rate_user_writes_per_second: float = 10.0
    rate_user_writes_burst: float = 50.0
    rate_tenant_writes_per_second: float = 1000.0
    rate_tenant_writes_burst: float = 2000.0
    rate_tenant_reads_per_second: float = 2000.0
    rate_tenant_reads_burst: float = 4000.0
    ws_frames_per_second: float = 20.0
    ws_frames_burst: float = 100.0
    ws_max_sockets_per_user: int = 20

    presence_away_seconds: float = 300.0
    presence_grace_seconds: float = 10.0
    presence_node_timeout_seconds: float = 5.0
    presence_heartbeat_seconds: float = 1.0
    typing_ttl_seconds: float = 5.0
    typing_throttle_seconds: float = 2.0
    typing_max_watchers: int = 100

    ws_queue_frames: int = 1000
    ws_max_subscriptions: int = 100
    ws_max_presence_watch: int = 1000
    ws_history_wait_seconds: float = 15.0
    ws_max_frame_bytes: int = 16 * 1024
    # outgoing frames a socket may hold (queued, and live events buffered while it replays history),
    # counted as the memory of their strings; beyond it a live socket is closed with 1013 and a
    # replay waits for the socket to drain
    ws_max_buffered_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    # a socket with frames to send that drains nothing for this long is aborted (TCP reset); also
    # the longest a closing handshake may wait on a peer that does not read
    ws_stall_seconds: float = Field(default=10.0, gt=0)
    # open subscriptions under a policy on time.* are judged again at each multiple of this many
    # seconds of UTC (60: as each minute starts; docs/abac.md)
    policy_recheck_seconds: float = Field(default=60.0, gt=0, le=3600)

    # billing (docs/plans.md, docs/quotas.md, docs/stripe.md)
    plans_file: Path | None = Field(default=None, description="TOML plans; the built-in free plan when unset")
    quotas: Literal["on", "off"] = Field(
        default="on", description="off: no quota check on writes (no 402s, no thresholds recorded)"
    )
    quota_cache_seconds: float = Field(default=5.0, gt=0, description="how stale a node's view of usage may be")
    billing_past_due: Literal["allow", "read_only"] = "allow"
    stripe_api_key: SecretStr | None = Field(default=None, description="secret; never logged")
    stripe_api_base: str | None = Field(default=None, description="Stripe's API address (stripe-mock in tests)")
    stripe_webhook_secret: SecretStr | None = Field(default=None, description="secret; never logged")
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_meter_prefix: str = "caas_"
    stripe_request_log: Path | None = Field(default=None, description="JSONL of every request the sync sends")
    billing_sync_seconds: float = Field(default=0.0, ge=0, description="periodic sync in worker/serve; 0: off")
    billing_sync_settle_seconds: float = Field(
        default=120.0, ge=0, description="an hour is closed this long after it ends"
    )
    billing_sync_clock_offset_seconds: float = Field(
        default=0.0, ge=0, description="the sync acts as if it were this much later (tests: close the current hour)"
    )
    retention_sweep_seconds: float = Field(
        default=3600.0, ge=0, description="how often caas serve shreds the channel-days past retention; 0: never"
    )
    retention_clock_offset_seconds: float = Field(
        default=0.0, ge=0, description="tests only: retention acts as if it were this much later (docs/retention.md)"
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        try:
            parts = urlsplit(url)
            port = parts.port  # a port out of 0-65535 raises here
        except ValueError as exc:
            raise ValueError(f"CAAS_PUBLIC_URL is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname or port == 0:
            raise ValueError("CAAS_PUBLIC_URL must be http(s)://host[:port][/path] with a port in 1-65535")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ValueError("CAAS_PUBLIC_URL takes no user, password, query or fragment")
        return url

    # outbound webhooks (docs/webhooks.md)
    webhooks: Literal["on", "off"] = Field(
        default="on", description="the delivery processor in serve (embedded) or worker (kafka)"
    )
    webhook_allow_private: bool = Field(
        default=False, description="allow private, loopback and link-local targets (tests, private networks)"
    )
    webhook_allowed_targets: str | None = Field(
        default=None,
        description="comma-separated host names and IP networks: the only targets sent to (unset: any public one)",
    )
    webhook_allowed_ports: str = Field(
        default="80,443,8080,8443",
        pattern=r"^\s*(\*|[0-9]{1,5}(\s*,\s*[0-9]{1,5})*)\s*$",
        description="the only ports webhooks are sent to, comma-separated; * for any",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="one attempt, DNS to response")
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0, description="the first retry's wait (then doubled)")
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0, description="the longest wait between attempts")
    webhook_disable_after_seconds: float = Field(default=86400.0, gt=0, description="failing this long disables")
    webhook_concurrency: int = Field(default=32, ge=1, description="attempts in flight at once, all endpoints")
    webhook_tenant_concurrency: int = Field(default=4, ge=1, description="attempts in flight at once, one tenant")
    webhook_max_endpoints: int = Field(default=20, ge=1, le=1000, description="endpoints one tenant may register")
    webhook_log_kept: int = Field(default=1000, ge=1, description="delivery log entries kept per endpoint")
    webhook_lease_seconds: float = Field(
        default=15.0, gt=0, description="the delivery lease (one processor sends); renewed every third of it"
    )
    webhook_poll_seconds: float = Field(default=2.0, gt=0, description="the shared poll besides new-event wake-ups")
    master_key: SecretStr | None = Field(
        default=None,
        description="base64 of 32 bytes: wraps the data keys that seal personal data (docs/erasure.md); embedded:"
        " generated into the data dir when unset, Kafka: required",
    )
    previous_master_key: SecretStr | None = Field(
        default=None, description="the master key before a rotation: keys it still wraps keep opening (docs/erasure.md)"
    )

    def unshared_secrets(self) -> list[str]:
        """The secrets a node of a cluster must be given rather than generate: ``secret_key``
        signs tokens that every node verifies, and ``admin_token`` is one credential for all."""
        names = ("secret_key", "admin_token", "master_key")  # master_key: every node opens the same data keys
        return [f"CAAS_{name.upper()}" for name in names if getattr(self, name) is None]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from an explicit environment mapping (for tests and the CLI), and options
        that override it (``caas serve --port``); both are validated, so ``--data-dir`` is a Path."""
        prefix = "CAAS_"
        values = {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix)}
        return cls.model_validate({**{k: v for k, v in values.items() if k in cls.model_fields}, **overrides})
