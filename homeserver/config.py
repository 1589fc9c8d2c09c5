"""The homeserver's YAML configuration: schema, loading and validation.

The schema is the frozen dataclasses below; each field's metadata carries its
documentation, so ``config.sample.yaml`` and
``docs/usage/configuration/config_documentation.md`` are checked against it
by the tests (they cannot drift apart).

Loading collects *every* problem before failing, each prefixed with the exact
path of the offending value (``listeners[0].port: expected an integer, got
"abc"``), so an operator fixes a config in one pass.

Secrets never need to be written into the config file:

* any string value may contain ``${NAME}``, replaced by the environment
  variable ``NAME`` (``$${`` writes a literal ``${``);
* a secret option ``X`` has a twin ``X_path`` naming a file that holds it
  (``registration_shared_secret_path``, ``database.password_path``).

Relative paths are resolved against the directory holding the config file.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import logging
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

__all__ = [
    "ConfigError",
    "DatabaseConfig",
    "DiscoveryConfig",
    "FederationConfig",
    "HomeserverConfig",
    "ListenerConfig",
    "LoggingConfig",
    "OldSigningKey",
    "QuotasConfig",
    "RatelimitingConfig",
    "TenantConfig",
    "TrustedKeyServer",
    "find_file_problems",
    "load_config",
    "option_paths",
    "parse_config",
]

ListenerType = Literal["client", "federation", "metrics"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
RoomVersionId = Literal["10", "11", "12"]


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "invalid configuration:\n  " + "\n  ".join(self.problems))


def _opt(
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    example: Any = None,
    kind: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    default_doc: str | None = None,
) -> Any:
    """A dataclass field whose metadata documents and constrains the option.

    ``kind`` refines the YAML type: ``duration`` (→ int milliseconds), ``size``
    (→ int bytes), ``path`` (resolved against the config file's directory),
    ``secret`` (never shown).
    """
    meta = {
        "doc": doc,
        "example": example,
        "kind": kind,
        "minimum": minimum,
        "maximum": maximum,
        "default_doc": default_doc,
    }
    if isinstance(default, (dict, list)):
        raise TypeError("mutable defaults are not allowed in the frozen config")
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, types.MappingProxyType):
        frozen = types.MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _opt(
        "Where the database lives. `sqlite:///ABSOLUTE/PATH.db` for SQLite (one file, "
        "good for small servers and tests) or `postgresql://USER@HOST:PORT/DBNAME` for "
        "PostgreSQL (recommended in production).",
        default="",
        default_doc="`sqlite://<data_dir>/homeserver.db`",
        example="postgresql://concord@localhost:5432/concord",
    )
    connect_timeout: int = _opt(
        "How long to wait for the database to answer at start-up before giving up "
        "with an error (a duration).",
        default=10_000,
        kind="duration",
        minimum=1,
        default_doc='"10s"',
        example="30s",
    )
    password: str | None = _opt(
        "PostgreSQL password, inserted into `url`. Prefer `password_path` or "
        "`${ENV_VAR}` to keep it out of this file.",
        default=None,
        kind="secret",
        example="${POSTGRES_PASSWORD}",
    )
    password_path: str | None = _opt(
        "File holding the PostgreSQL password (trailing newline ignored). "
        "Alternative to `password`.",
        default=None,
        kind="path",
        example="/run/secrets/postgres_password",
    )


@dataclass(frozen=True)
class ListenerConfig:
    type: ListenerType = _opt(
        "What this listener serves: `client` (the Client-Server API and /health), "
        "`federation` (the Server-Server API, key server and /health) or `metrics` "
        "(Prometheus exposition at /metrics).",
        example="client",
    )
    port: int = _opt(
        "TCP port. 0 picks a free port (the chosen port is logged at start-up).",
        minimum=0,
        maximum=65535,
        example=8008,
    )
    bind_addresses: tuple[str, ...] = _opt(
        "IP addresses to listen on. `0.0.0.0` listens on every IPv4 address, `::` on "
        "every IPv6 (and on Linux IPv4 too).",
        default=("127.0.0.1",),
        example=["127.0.0.1", "::1"],
    )
    tls: bool = _opt(
        "Serve HTTPS on this listener with the certificate and key below. Federation "
        "peers require TLS on port 8448 unless a reverse proxy terminates it.",
        default=False,
        example=True,
    )
    tls_certificate_path: str | None = _opt(
        "PEM certificate chain for `tls` (required when `tls` is true).",
        default=None,
        kind="path",
        example="/data/tls.crt",
    )
    tls_private_key_path: str | None = _opt(
        "PEM private key for `tls` (required when `tls` is true).",
        default=None,
        kind="path",
        example="/data/tls.key",
    )


@dataclass(frozen=True)
class OldSigningKey:
    key_id: str = _opt("The retired key's ID, `ed25519:<version>`.", example="ed25519:a_old")
    public_key: str = _opt(
        "The retired key's public half, unpadded base64.",
        example="l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ",
    )
    expired_ts: int = _opt(
        "When the key stopped being used, in milliseconds since the Unix epoch.",
        minimum=0,
        example=1_700_000_000_000,
    )


@dataclass(frozen=True)
class TrustedKeyServer:
    server_name: str = _opt("The notary server's name.", example="matrix.org")
    verify_keys: Mapping[str, str] = _opt(
        "The notary's own keys (key ID → unpadded base64 public key). Responses "
        "it signs with none of them are rejected. Empty: trust on first use.",
        default=types.MappingProxyType({}),
        example={"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"},
    )


@dataclass(frozen=True)
class FederationConfig:
    verify_certificates: bool = _opt(
        "Check the TLS certificates of servers we federate with. Turn off ONLY for "
        "test setups with self-signed certificates; a warning is logged at start-up.",
        default=True,
        example=False,
    )
    ca_file: str | None = _opt(
        "PEM bundle of extra certificate authorities to trust for outbound federation "
        "(e.g. a private test CA), in addition to the system's.",
        default=None,
        kind="path",
        example="/etc/concord/test-ca.pem",
    )
    trusted_key_servers: tuple[TrustedKeyServer, ...] = _opt(
        "Notary servers asked for other servers' signing keys (Server-Server API, "
        '"Querying Keys Through Another Server"). Empty: ask each server directly.',
        default=(),
        example=[
            {
                "server_name": "matrix.org",
                "verify_keys": {"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"},
            }
        ],
    )
    trusted_servers: tuple[str, ...] | None = _opt(
        "The trust domain: the only servers this node federates with (server-name "
        "patterns: `example.org` on any port, `example.org:8448` on that port, "
        "`*.example.org` one label, `**.example.org` one or more labels, `*` every "
        "server). Requests from other servers are refused with 403 M_FORBIDDEN and "
        "nothing is sent to them. Unset: open federation. Reloaded on SIGHUP; the admin "
        "API can override it (docs/usage/trust_domain.md).",
        default=None,
        default_doc="unset (open federation)",
        example=["example.org", "*.example.org", "partner.test:8448"],
    )
    destination_overrides: Mapping[str, str] = _opt(
        "TEST SETUPS ONLY: send outbound federation for a server name to a fixed base "
        "URL (server name → `http(s)://HOST:PORT`) instead of resolving the name. The "
        "federation test harness (concord_harness) uses it to route each link through "
        "its fault-injecting proxy. Requests keep the real name in `Host` and in the "
        "signed `destination`.",
        default=types.MappingProxyType({}),
        example={"hs2.test": "http://127.0.0.1:18448"},
    )
    retry_min_interval: int = _opt(
        "After a failed transaction, how long a destination is left alone before the "
        "first retry (a duration); each further failure doubles it, with ±20 % jitter "
        "(docs/usage/delivery.md).",
        default=10_000,
        kind="duration",
        minimum=100,
        default_doc='"10s"',
        example="30s",
    )
    retry_max_interval: int = _opt(
        "The longest wait between retries of a destination (a duration); a 429 "
        "`retry_after_ms` is honoured up to this too.",
        default=86_400_000,
        kind="duration",
        minimum=1000,
        default_doc='"1d"',
        example="6h",
    )
    max_delivery_attempts: int = _opt(
        "Attempts to send a transaction before its deliveries move to the dead-letter "
        "store (reason `max_attempts`), from where an operator can replay them.",
        default=20,
        minimum=1,
        example=50,
    )
    max_delivery_age: int = _opt(
        "How long a delivery may stay undelivered (a duration) before it moves to the "
        "dead-letter store (reason `max_age`); checked when an attempt fails.",
        default=7 * 86_400_000,
        kind="duration",
        minimum=1000,
        default_doc='"7d"',
        example="3d",
    )
    inbound_transaction_window: int = _opt(
        "How long the answer to a received transaction is kept (a duration, at least "
        "a day): a peer retrying the same txnId within it gets the same answer and "
        "changes nothing; the same txnId with other content is refused.",
        default=86_400_000,
        kind="duration",
        minimum=86_400_000,
        default_doc='"1d"',
        example="2d",
    )
    max_request_size: int = _opt(
        "Largest request body the federation listener accepts (a size), when smaller "
        "than the top-level `max_request_size`. A transaction holds at most 50 PDUs "
        "of 64 KiB and 100 EDUs; larger bodies are refused with 413 M_TOO_LARGE.",
        default=8 * 1024 * 1024,
        kind="size",
        minimum=1024,
        default_doc='"8M"',
        example="4M",
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: LogLevel = _opt(
        "Minimum level logged to standard error.", default="INFO", example="DEBUG"
    )
    format: str = _opt(
        "Python `logging` format string for each line.",
        default="%(asctime)s %(levelname)s %(name)s: %(message)s",
        example="%(levelname)s %(name)s: %(message)s",
    )
    loggers: Mapping[str, LogLevel] = _opt(
        "Per-logger levels overriding `level` (logger name → level). "
        "`homeserver.access` logs one line per HTTP request.",
        default=types.MappingProxyType({}),
        example={"homeserver.access": "WARNING"},
    )


@dataclass(frozen=True)
class QuotasConfig:
    max_users: int | None = _opt(
        "Most local users the tenant may have; registering one more is refused with "
        "403 M_RESOURCE_LIMIT_EXCEEDED. Unset: no limit.",
        default=None,
        minimum=0,
        example=500,
    )
    max_rooms: int | None = _opt(
        "Most rooms the tenant's users may create. Unset: no limit.",
        default=None,
        minimum=0,
        example=1000,
    )
    max_events_per_minute: int | None = _opt(
        "Most events the tenant's users may send per minute, all users together "
        "(a token bucket refilled evenly over the minute). Unset: no limit.",
        default=None,
        minimum=1,
        example=600,
    )
    admin_contact: str | None = _opt(
        "Where users who hit a quota may reach the operator (`admin_contact` of "
        "M_RESOURCE_LIMIT_EXCEEDED, which the spec requires). Unset: "
        "`mailto:admin@<server name>`.",
        default=None,
        example="mailto:ops@example.org",
    )


@dataclass(frozen=True)
class RatelimitingConfig:
    login_per_address_per_second: float = _opt(
        "Login attempts refilled per second for each client IP address (per tenant).",
        default=0.17,
        minimum=0.0001,
        example=0.05,
    )
    login_per_address_burst: int = _opt(
        "Login attempts an IP address may make at once before being limited "
        "(429 M_LIMIT_EXCEEDED with `retry_after_ms`).",
        default=10,
        minimum=1,
        example=5,
    )
    login_per_account_per_second: float = _opt(
        "Login attempts refilled per second for each account.",
        default=0.17,
        minimum=0.0001,
        example=0.05,
    )
    login_per_account_burst: int = _opt(
        "Login attempts one account may receive at once before being limited.",
        default=5,
        minimum=1,
        example=3,
    )
    federation_send_per_second: float = _opt(
        "Inbound federation transactions (`PUT /send`) refilled per second for each "
        "origin server.",
        default=30.0,
        minimum=0.0001,
        example=10,
    )
    federation_send_burst: int = _opt(
        "Transactions an origin server may send at once before being limited "
        "(429 M_LIMIT_EXCEEDED with `retry_after_ms`, which senders wait out).",
        default=300,
        minimum=1,
        example=100,
    )
    federation_join_per_second: float = _opt(
        "Federation membership requests (`make_join`, `send_join`, `make_leave`, "
        "`send_leave`, `invite`) refilled per second for each origin server.",
        default=2.0,
        minimum=0.0001,
        example=0.5,
    )
    federation_join_burst: int = _opt(
        "Membership requests an origin server may make at once before being limited.",
        default=50,
        minimum=1,
        example=20,
    )
    federation_query_per_second: float = _opt(
        "Federation queries (`query/directory`, `query/profile`, `publicRooms`) "
        "refilled per second for each origin server.",
        default=10.0,
        minimum=0.0001,
        example=2,
    )
    federation_query_burst: int = _opt(
        "Queries an origin server may make at once before being limited.",
        default=100,
        minimum=1,
        example=20,
    )


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = _opt(
        "Run the room discovery crawler and health prober (one background task per "
        "node, started with the client listener; docs/usage/room_discovery.md). The "
        "search API answers from the index either way.",
        default=True,
        example=False,
    )
    crawl_interval: int = _opt(
        "How often each healthy peer's published room directory is crawled (a duration).",
        default=900_000,
        kind="duration",
        minimum=1_000,
        default_doc='"15m"',
        example="1h",
    )
    crawl_jitter: int = _opt(
        "A random delay of up to this much is added to each peer's next crawl, so that "
        "nodes started together do not crawl in step (a duration).",
        default=120_000,
        kind="duration",
        minimum=0,
        default_doc='"2m"',
        example="5m",
    )
    health_probe_interval: int = _opt(
        "How often each peer is probed (`/_matrix/federation/v1/version` and its keys; "
        "a duration).",
        default=60_000,
        kind="duration",
        minimum=1_000,
        default_doc='"1m"',
        example="30s",
    )
    health_window: int = _opt(
        "The rolling window of probes a peer's health is judged on (a duration).",
        default=600_000,
        kind="duration",
        minimum=1_000,
        default_doc='"10m"',
        example="30m",
    )
    health_offline_failures: int = _opt(
        "Consecutive failed probes that make a peer `offline` (fewer failures in the "
        "window make it `degraded`).",
        default=3,
        minimum=1,
        example=5,
    )
    health_degraded_latency: int = _opt(
        "A median probe latency above this makes a peer `degraded` (a duration).",
        default=2_000,
        kind="duration",
        minimum=1,
        default_doc='"2s"',
        example="500ms",
    )
    offline_threshold: int = _opt(
        "A peer `offline` for this long has its rooms dropped from search results (they "
        "come back when it is healthy again; it stays in the trust domain; a duration).",
        default=3_600_000,
        kind="duration",
        minimum=0,
        default_doc='"1h"',
        example="6h",
    )
    peers: tuple[str, ...] = _opt(
        "Further servers to crawl besides the literal names of the trust domain (they "
        "must be in it). The admin API and `homeserver discovery add-peer` add more at "
        "run time.",
        default=(),
        example=["rooms.example.org"],
    )
    max_rooms_per_peer: int = _opt(
        "At most this many rooms of one peer's directory are indexed.",
        default=10_000,
        minimum=1,
        example=1000,
    )


TenantMode = Literal["shared", "dedicated"]


@dataclass(frozen=True)
class TenantConfig:
    server_name: str = _opt(
        "The tenant's server name (`@user:NAME`), optionally with a port.",
        example="acme.example",
    )
    client_hostnames: tuple[str, ...] = _opt(
        "Other `Host` names its client API answers on (`matrix.acme.example`); a "
        "port is compared only when the name carries one.",
        default=(),
        example=["matrix.acme.example"],
    )
    signing_key_path: str | None = _opt(
        "The tenant's ed25519 signing key file; created at start-up when missing.",
        default=None,
        kind="path",
        default_doc="`<data_dir>/tenants/<server_name>.signing.key`",
        example="/data/tenants/acme.example.signing.key",
    )
    mode: TenantMode = _opt(
        "`shared`: the tenant's rows live in the node's database. `dedicated`: in its "
        "own database (`database_url`), migrated when the tenant is created.",
        default="shared",
        example="dedicated",
    )
    database_url: str | None = _opt(
        "The tenant's own database (`sqlite:///PATH` or `postgresql://...`); required "
        "with `mode: dedicated`, refused with `shared`.",
        default=None,
        example="postgresql://concord@localhost/acme",
    )
    enable_registration: bool = _opt(
        "Let anyone register an account on this tenant (`POST /register`).",
        default=False,
        example=True,
    )
    quotas: QuotasConfig = _opt(
        "The tenant's quotas.", default=QuotasConfig(), example={"max_users": 100}
    )
    trusted_servers: tuple[str, ...] | None = _opt(
        "The tenant's own trust domain, replacing `federation.trusted_servers` for it "
        "(same patterns; `[\"*\"]` for open federation). Unset: the node-wide setting.",
        default=None,
        default_doc="unset (`federation.trusted_servers` applies)",
        example=["*.acme.example"],
    )


@dataclass(frozen=True)
class HomeserverConfig:
    server_name: str = _opt(
        "This server's public name: the domain part of its user IDs and room aliases "
        "(`@alice:NAME`), optionally with a port. It cannot be changed later.",
        example="example.org",
    )
    data_dir: str = _opt(
        "Directory for the server's own files (SQLite database, signing key, media).",
        default="",
        kind="path",
        default_doc="the directory holding this config file",
        example="/data",
    )
    signing_key_path: str = _opt(
        "The ed25519 signing key file (Synapse's format: `ed25519 <version> <seed>`). "
        "Create one with `homeserver generate-keys --config FILE`.",
        default="",
        kind="path",
        default_doc="`<data_dir>/signing.key`",
        example="/data/example.org.signing.key",
    )
    key_validity_period: int = _opt(
        "How long other servers may cache our signing keys (`valid_until_ts` in "
        "`/_matrix/key/v2/server`, a duration).",
        default=86_400_000,
        kind="duration",
        minimum=60_000,
        default_doc='"1d"',
        example="7d",
    )
    old_signing_keys: tuple[OldSigningKey, ...] = _opt(
        "Keys this server used to sign with, still published as `old_verify_keys` so "
        "events signed with them stay verifiable.",
        default=(),
        example=[
            {
                "key_id": "ed25519:a_old",
                "public_key": "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ",
                "expired_ts": 1_700_000_000_000,
            }
        ],
    )
    database: DatabaseConfig = _opt(
        "The database.", default=DatabaseConfig(), example={"url": "sqlite:///data/h.db"}
    )
    listeners: tuple[ListenerConfig, ...] = _opt(
        "The HTTP listeners.",
        default=(
            ListenerConfig(type="client", port=8008),
            ListenerConfig(type="federation", port=8448),
        ),
        default_doc="a client listener on 127.0.0.1:8008 and a federation listener "
        "on 127.0.0.1:8448",
        example=[{"type": "client", "port": 8008}],
    )
    federation: FederationConfig = _opt(
        "Outbound federation.", default=FederationConfig(), example={"ca_file": "/ca.pem"}
    )
    max_request_size: int = _opt(
        "Largest request body accepted (a size: bytes, or with K, M or G). Larger "
        "bodies are refused with 413 M_TOO_LARGE.",
        default=10 * 1024 * 1024,
        kind="size",
        minimum=1024,
        default_doc='"10M"',
        example="50M",
    )
    shutdown_timeout: int = _opt(
        "On SIGTERM/SIGINT, how long in-flight requests may run before they are "
        "cancelled (a duration).",
        default=10_000,
        kind="duration",
        minimum=0,
        default_doc='"10s"',
        example="30s",
    )
    logging: LoggingConfig = _opt(
        "Logging to standard error.", default=LoggingConfig(), example={"level": "DEBUG"}
    )
    registration_shared_secret: str | None = _opt(
        "Shared secret for admin-driven user registration. Unset: disabled. Prefer "
        "`registration_shared_secret_path` or `${ENV_VAR}`.",
        default=None,
        kind="secret",
        example="${CONCORD_REGISTRATION_SECRET}",
    )
    registration_shared_secret_path: str | None = _opt(
        "File holding the registration shared secret (trailing newline ignored). "
        "Alternative to `registration_shared_secret`.",
        default=None,
        kind="path",
        example="/data/registration_shared_secret",
    )
    enable_registration: bool = _opt(
        "Let anyone register an account on `server_name` (`POST /register` with the "
        "`m.login.dummy` flow). Off: only the shared-secret flow and "
        "`homeserver register-user` create accounts.",
        default=False,
        example=True,
    )
    password_hash_rounds: int = _opt(
        "bcrypt cost factor for password hashes (each step doubles the work). Lower "
        "it only for tests.",
        default=12,
        minimum=4,
        maximum=31,
        example=12,
    )
    default_room_version: RoomVersionId = _opt(
        "Room version of rooms created without `room_version` in `POST /createRoom` "
        "(a string: \"10\", \"11\" or \"12\"); also the default `/capabilities` "
        "reports.",
        default="12",
        example="11",
    )
    client_hostnames: tuple[str, ...] = _opt(
        "Other `Host` names the client API of `server_name` answers on, when the "
        "node hosts several tenants (a single-tenant node answers on every Host).",
        default=(),
        example=["matrix.example.org"],
    )
    quotas: QuotasConfig = _opt(
        "Quotas of `server_name` (each tenant sets its own under `tenants`).",
        default=QuotasConfig(),
        example={"max_users": 1000},
    )
    ratelimiting: RatelimitingConfig = _opt(
        "Rate limits (token buckets): login attempts per IP address and per account; "
        "inbound federation requests per origin server.",
        default=RatelimitingConfig(),
        example={"login_per_address_burst": 5},
    )
    discovery: DiscoveryConfig = _opt(
        "Room discovery: a searchable index of the public rooms of the servers in the "
        "trust domain, with their health (docs/usage/room_discovery.md).",
        default=DiscoveryConfig(),
        example={"crawl_interval": "1h"},
    )
    tenants: tuple[TenantConfig, ...] = _opt(
        "Further server names this node hosts, each with its own keys, users and "
        "rooms (docs/usage/tenants.md). More can be added at run time with "
        "`homeserver tenant create`.",
        default=(),
        example=[{"server_name": "acme.example", "client_hostnames": ["matrix.acme.example"]}],
    )

    def listeners_of(self, kind: ListenerType) -> tuple[ListenerConfig, ...]:
        return tuple(li for li in self.listeners if li.type == kind)


# --------------------------------------------------------------------------
# Loading


_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")
_DURATION_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]?)B?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_KEY_ID_RE = re.compile(r"^ed25519:[A-Za-z0-9_]+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]{43}$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9\-.]+$")


def parse_duration(text: str) -> int:
    """``"10s"`` → 10000 (milliseconds). Raises ValueError on anything else."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * _DURATION_MS[m.group(2)])


def valid_server_name(name: str) -> bool:
    """Server-Server API "Server names": ``host[:port]``, host a DNS name or IP literal."""
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return False
        host, rest = name[1:end], name[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
    else:
        if name.count(":") == 1:
            host, port = name.split(":")
        if not host or len(host) > 255 or not _HOST_LABEL_RE.match(host):
            return False
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535 or len(port) > 5:
            return False
    return True


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class _Loader:
    def __init__(self, base_dir: str, env: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.env = env
        self.problems: list[str] = []

    def problem(self, path: str, msg: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {msg}")

    def interpolate(self, path: str, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if name not in self.env:
                self.problem(path, f'environment variable "{name}" is not set')
                return ""
            return self.env[name]

        return _ENV_RE.sub(sub, text)

    def resolve_path(self, text: str) -> str:
        text = os.path.expanduser(text)
        return os.path.normpath(os.path.join(self.base_dir, text))

    def convert(self, value: Any, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
        """Convert one YAML value to ``tp``; record problems and return _BAD on failure."""
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            return self.convert(value, args[0], path, meta)
        if origin is Literal:
            choices = get_args(tp)
            if value in choices and isinstance(value, str):
                return value
            listed = ", ".join(f'"{c}"' for c in choices)
            self.problem(path, f"expected one of {listed}, got {_shown(value)}")
            return _BAD
        if origin is tuple:
            (item_tp, _) = get_args(tp)
            if not isinstance(value, list):
                self.problem(path, f"expected a list, got {_shown(value)}")
                return _BAD
            items = [self.convert(v, item_tp, f"{path}[{i}]", meta) for i, v in enumerate(value)]
            return _BAD if any(i is _BAD for i in items) else tuple(items)
        if origin is Mapping:
            (key_tp, val_tp) = get_args(tp)
            if not isinstance(value, dict):
                self.problem(path, f"expected a mapping, got {_shown(value)}")
                return _BAD
            out: dict[str, Any] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    self.problem(f"{path}.{k}", "keys must be strings")
                    continue
                out[k] = self.convert(v, val_tp, f"{path}.{k}", meta)
            if any(v is _BAD for v in out.values()) or len(out) != len(value):
                return _BAD
            return types.MappingProxyType(out)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)
        kind = meta.get("kind")
        if kind == "duration":
            return self.convert_duration(value, path, meta)
        if kind == "size":
            return self.convert_size(value, path, meta)
        if tp is str:
            if isinstance(value, str):
                text = self.interpolate(path, value)
                if kind == "path":
                    if not text:
                        self.problem(path, "expected a path, got an empty string")
                        return _BAD
                    return self.resolve_path(text)
                return text
        elif tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return self.in_range(value, path, meta)
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return self.in_range(float(value), path, meta)
        else:  # pragma: no cover - a schema bug, not an operator's
            raise TypeError(f"unsupported config type {tp!r} at {path}")
        self.problem(path, f"expected {_TYPE_NAMES[tp]}, got {_shown(value)}")
        return _BAD

    def in_range(self, value: float, path: str, meta: Mapping[str, Any]) -> Any:
        lo, hi = meta.get("minimum"), meta.get("maximum")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                self.problem(path, f"must be between {lo:g} and {hi:g}, got {value:g}")
            elif lo is not None:
                self.problem(path, f"must be at least {lo:g}, got {value:g}")
            else:
                self.problem(path, f"must be at most {hi:g}, got {value:g}")
            return _BAD
        return value

    def convert_duration(self, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            ms = value
        elif isinstance(value, str):
            try:
                ms = parse_duration(self.interpolate(path, value))
            except ValueError:
                self.problem(
                    path,
                    f'expected a duration like "500ms", "10s", "5m", "1h" or "1d", '
                    f"got {_shown(value)}",
                )
                return _BAD
        else:
            self.problem(path, f'expected a duration like "10s" or "1d", got {_shown(value)}')
            return _BAD
        lo = meta.get("minimum")
        if lo is not None and ms < lo:
            self.problem(path, f"must be at least {lo:g} ms, got {ms} ms")
            return _BAD
        return ms

    def convert_size(self, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
        size: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str):
            m = _SIZE_RE.match(value)
            if m:
                size = int(m.group(1)) * _SIZE_MULT[m.group(2).upper()]
        if size is None:
            self.problem(path, f'expected a size like "512K" or "10M", got {_shown(value)}')
            return _BAD
        lo = meta.get("minimum")
        if lo is not None and size < lo:
            self.problem(path, f"must be at least {lo:g} bytes, got {size}")
            return _BAD
        return size

    def build(self, cls: Any, raw: Any, path: str) -> Any:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem(path, f"expected a mapping, got {_shown(raw)}")
            return _BAD
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        prefix = f"{path}." if path else ""
        for key in raw:
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problem(f"{prefix}{key}", f"unknown option{hint}")
        kwargs: dict[str, Any] = {}
        bad = False
        for name, f in fields.items():
            if name in raw:
                value = self.convert(raw[name], hints[name], f"{prefix}{name}", f.metadata)
                if value is _BAD:
                    bad = True
                else:
                    kwargs[name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.problem(f"{prefix}{name}", "required option is missing")
                bad = True
        if bad:
            return _BAD
        return cls(**kwargs)


class _Bad:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD: Any = _Bad()


def _read_secret_file(loader: _Loader, path_key: str, filename: str) -> str | None:
    try:
        with open(filename, encoding="utf-8") as fh:
            secret = fh.read().rstrip("\r\n")
    except OSError as e:
        loader.problem(path_key, f"cannot read {filename}: {e.strerror or e}")
        return None
    if not secret:
        loader.problem(path_key, f"{filename} is empty")
        return None
    return secret


def _finish_database(loader: _Loader, db: DatabaseConfig, data_dir: str) -> DatabaseConfig:
    url = db.url or f"sqlite://{os.path.join(data_dir, 'homeserver.db')}"
    password = db.password
    if db.password is not None and db.password_path is not None:
        loader.problem("database.password_path", "cannot be set together with database.password")
    elif db.password_path is not None:
        password = _read_secret_file(loader, "database.password_path", db.password_path)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        rest = url[len("sqlite://") :]
        if not rest or rest == "/":
            loader.problem("database.url", f"expected sqlite:///PATH, got {_shown(url)}")
        elif rest not in ("/:memory:",) and not rest.startswith("/"):
            loader.problem("database.url", f"expected sqlite:///PATH, got {_shown(url)}")
        if password is not None:
            loader.problem("database.password", "only applies to a PostgreSQL database")
    elif parts.scheme in ("postgresql", "postgres"):
        if not parts.hostname and "host=" not in parts.query:
            loader.problem("database.url", "names no host")
        if password is not None:
            if parts.password is not None:
                loader.problem("database.password", "the url already holds a password")
            else:
                host = parts.netloc.rpartition("@")[2]
                user = parts.username or ""
                netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
                url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    else:
        loader.problem(
            "database.url",
            f"expected a sqlite:/// or postgresql:// URL, got {_shown(parts.scheme + '://...')}",
        )
    return dataclasses.replace(db, url=url, password=password)


def _check_semantics(loader: _Loader, cfg: HomeserverConfig) -> HomeserverConfig:
    """Cross-field rules, plus defaults derived from other options."""
    if not valid_server_name(cfg.server_name):
        loader.problem(
            "server_name",
            f"expected a host name with an optional port, got {_shown(cfg.server_name)}",
        )
    data_dir = cfg.data_dir or loader.base_dir
    signing_key_path = cfg.signing_key_path or os.path.join(data_dir, "signing.key")
    database = _finish_database(loader, cfg.database, data_dir)

    secret = cfg.registration_shared_secret
    if secret is not None and cfg.registration_shared_secret_path is not None:
        loader.problem(
            "registration_shared_secret_path",
            "cannot be set together with registration_shared_secret",
        )
    elif cfg.registration_shared_secret_path is not None:
        secret = _read_secret_file(
            loader, "registration_shared_secret_path", cfg.registration_shared_secret_path
        )

    seen: dict[tuple[str, int], int] = {}
    for i, li in enumerate(cfg.listeners):
        for j, addr in enumerate(li.bind_addresses):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                loader.problem(
                    f"listeners[{i}].bind_addresses[{j}]",
                    f"expected an IP address, got {_shown(addr)}",
                )
            if li.port != 0:
                other = seen.setdefault((addr, li.port), i)
                if other != i:
                    loader.problem(
                        f"listeners[{i}].port",
                        f"{addr}:{li.port} is already used by listeners[{other}]",
                    )
        if li.tls:
            for key in ("tls_certificate_path", "tls_private_key_path"):
                if getattr(li, key) is None:
                    loader.problem(f"listeners[{i}].{key}", "required when tls is true")
        if not li.bind_addresses:
            loader.problem(f"listeners[{i}].bind_addresses", "must list at least one address")

    for i, old in enumerate(cfg.old_signing_keys):
        if not _KEY_ID_RE.match(old.key_id):
            loader.problem(
                f"old_signing_keys[{i}].key_id",
                f'expected "ed25519:<version>", got {_shown(old.key_id)}',
            )
        if not _B64_RE.match(old.public_key):
            loader.problem(
                f"old_signing_keys[{i}].public_key",
                "expected an unpadded base64 ed25519 public key (43 characters)",
            )
    for i, ks in enumerate(cfg.federation.trusted_key_servers):
        if not valid_server_name(ks.server_name):
            loader.problem(
                f"federation.trusted_key_servers[{i}].server_name",
                f"expected a server name, got {_shown(ks.server_name)}",
            )
        for key_id, key in ks.verify_keys.items():
            where = f"federation.trusted_key_servers[{i}].verify_keys.{key_id}"
            if not _KEY_ID_RE.match(key_id):
                loader.problem(where, 'key IDs look like "ed25519:<version>"')
            if not isinstance(key, str) or not _B64_RE.match(key):
                loader.problem(where, "expected an unpadded base64 ed25519 public key")

    _check_trusted_servers(loader, "federation.trusted_servers", cfg.federation.trusted_servers)
    for i, t in enumerate(cfg.tenants):
        _check_trusted_servers(loader, f"tenants[{i}].trusted_servers", t.trusted_servers)
    for i, peer in enumerate(cfg.discovery.peers):
        if not valid_server_name(peer):
            loader.problem(f"discovery.peers[{i}]", f"{peer!r} is not a server name")

    for name, url in cfg.federation.destination_overrides.items():
        where = f"federation.destination_overrides.{name}"
        if not valid_server_name(str(name)):
            loader.problem(where, f"expected a server name as the key, got {_shown(name)}")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            loader.problem(where, f"expected an http(s)://HOST:PORT URL, got {_shown(url)}")

    if cfg.federation.retry_max_interval < cfg.federation.retry_min_interval:
        loader.problem(
            "federation.retry_max_interval",
            f"must be at least federation.retry_min_interval "
            f"({cfg.federation.retry_min_interval} ms), got "
            f"{cfg.federation.retry_max_interval} ms",
        )

    tenants = _check_tenants(loader, cfg, data_dir)

    try:
        logging.Formatter(cfg.logging.format).format(
            logging.LogRecord("x", logging.INFO, "x", 0, "m", None, None)
        )
    except (ValueError, KeyError, TypeError) as e:
        loader.problem("logging.format", f"not a usable logging format: {e}")

    return dataclasses.replace(
        cfg,
        data_dir=data_dir,
        signing_key_path=signing_key_path,
        database=database,
        registration_shared_secret=secret,
        tenants=tenants,
    )


def _check_trusted_servers(loader: _Loader, where: str, patterns: tuple[str, ...] | None) -> None:
    from federation.trust import TrustPatternError, parse_pattern

    for i, text in enumerate(patterns or ()):
        try:
            parse_pattern(text)
        except TrustPatternError as e:
            loader.problem(f"{where}[{i}]", str(e))


def tenant_key_file_name(server_name: str) -> str:
    """File name for a tenant's key: the server name with ``:``/``[]`` made path-safe."""
    return re.sub(r"[^A-Za-z0-9.\-]", "_", server_name) + ".signing.key"


def _check_tenants(
    loader: _Loader, cfg: HomeserverConfig, data_dir: str
) -> tuple[TenantConfig, ...]:
    """Names unique and valid, hostnames claimed once, mode and database agree."""
    claimed: dict[str, str] = {}

    def claim(name: str, where: str, owner: str) -> None:
        other = claimed.setdefault(name.lower(), owner)
        if other != owner:
            loader.problem(where, f"{name} is already used by {other}")

    claim(cfg.server_name, "server_name", "server_name")
    for j, host in enumerate(cfg.client_hostnames):
        if not valid_server_name(host):
            loader.problem(f"client_hostnames[{j}]", f"expected a host name, got {_shown(host)}")
        claim(host, f"client_hostnames[{j}]", "server_name")
    out = []
    for i, t in enumerate(cfg.tenants):
        where = f"tenants[{i}]"
        if not valid_server_name(t.server_name):
            loader.problem(
                f"{where}.server_name",
                f"expected a host name with an optional port, got {_shown(t.server_name)}",
            )
        claim(t.server_name, f"{where}.server_name", where)
        for j, host in enumerate(t.client_hostnames):
            if not valid_server_name(host):
                loader.problem(
                    f"{where}.client_hostnames[{j}]", f"expected a host name, got {_shown(host)}"
                )
            claim(host, f"{where}.client_hostnames[{j}]", where)
        if t.mode == "dedicated" and not t.database_url:
            loader.problem(f"{where}.database_url", "required with mode: dedicated")
        if t.mode == "shared" and t.database_url:
            loader.problem(f"{where}.database_url", "only applies with mode: dedicated")
        if t.database_url:
            scheme = urlsplit(t.database_url).scheme
            if scheme not in ("sqlite", "postgresql", "postgres"):
                loader.problem(
                    f"{where}.database_url",
                    f"expected a sqlite:/// or postgresql:// URL, got {_shown(t.database_url)}",
                )
        key_path = t.signing_key_path or os.path.join(
            data_dir, "tenants", tenant_key_file_name(t.server_name)
        )
        out.append(dataclasses.replace(t, signing_key_path=key_path))
    return tuple(out)


def parse_config(
    raw: Any,
    *,
    base_dir: str,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> HomeserverConfig:
    """Build a config from already-parsed YAML; raises ConfigError listing every problem."""
    loader = _Loader(os.path.abspath(base_dir), os.environ if env is None else env)
    if raw is None:
        raise ConfigError(["the config is empty; run `homeserver generate-config`"], source)
    cfg = loader.build(HomeserverConfig, raw, "")
    if cfg is not _BAD and not loader.problems:
        cfg = _check_semantics(loader, cfg)
    if loader.problems:
        raise ConfigError(loader.problems, source)
    assert isinstance(cfg, HomeserverConfig)
    return cfg


def load_config(path: str, *, env: Mapping[str, str] | None = None) -> HomeserverConfig:
    """Read and validate the YAML config at ``path``.

    Raises ConfigError (never OSError or a YAML exception) with every problem found.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError([f"cannot read the config file: {e.strerror or e}"], path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"not valid YAML: {where}{what}"], path) from None
    return parse_config(raw, base_dir=os.path.dirname(os.path.abspath(path)), env=env, source=path)


def find_file_problems(cfg: HomeserverConfig) -> list[str]:
    """Problems with the files the config names (signing key, TLS files, CA bundle)."""
    import ssl

    from homeserver.signing_key import SigningKeyError, read_signing_key_file

    problems: list[str] = []
    try:
        read_signing_key_file(cfg.signing_key_path)
    except SigningKeyError as e:
        problems.append(f"signing_key_path: {e}")
    for i, li in enumerate(cfg.listeners):
        if li.tls and li.tls_certificate_path and li.tls_private_key_path:
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(li.tls_certificate_path, li.tls_private_key_path)
            except (OSError, ssl.SSLError) as e:
                problems.append(
                    f"listeners[{i}]: cannot load the TLS certificate "
                    f"{li.tls_certificate_path} with key {li.tls_private_key_path}: "
                    f"{getattr(e, 'strerror', None) or e}"
                )
    if cfg.federation.ca_file is not None:
        try:
            ssl.create_default_context(cafile=cfg.federation.ca_file)
        except (OSError, ssl.SSLError) as e:
            problems.append(
                f"federation.ca_file: cannot load {cfg.federation.ca_file}: "
                f"{getattr(e, 'strerror', None) or e}"
            )
    return problems


def option_paths(cls: Any = HomeserverConfig, prefix: str = "") -> list[str]:
    """Every option the loader knows, as documentation paths (``listeners[].port``)."""
    out: list[str] = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        tp = hints[f.name]
        if get_origin(tp) is tuple:
            item = get_args(tp)[0]
            if dataclasses.is_dataclass(item):
                out.extend(option_paths(item, f"{path}[]."))
        elif dataclasses.is_dataclass(tp):
            out.extend(option_paths(tp, f"{path}."))
    return out


def option_field(path: str) -> dataclasses.Field[Any]:
    """The dataclass field behind an option path from :func:`option_paths`."""
    cls: Any = HomeserverConfig
    parts = path.replace("[]", "").split(".")
    for i, name in enumerate(parts):
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if i == len(parts) - 1:
            return f
        tp = get_type_hints(cls)[name]
        cls = get_args(tp)[0] if get_origin(tp) is tuple else tp
    raise KeyError(path)
