"""Tenants: the server names one node hosts, and the one resolver to their data.

Issue "Client-server API and tenants" (docs/usage/tenants.md). A tenant is a
server name with its own signing key, users, rooms and quotas. The node's own
``server_name`` is always a tenant (the *primary* one); further tenants come
from the config's ``tenants`` list or are created at run time
(``homeserver tenant create``, ``POST /_concord/admin/v1/tenants``). The
``tenants`` table in the node's database is the source of truth for run-time
tenants and for every tenant's suspension.

Everything that reads or writes a tenant's rows gets its database from
:meth:`Tenant.database` (shared mode: the node's database; dedicated mode:
the tenant's own, opened on first use and migrated when the tenant is
created), so no other code knows which mode a tenant uses. Rows are scoped
by a ``tenant`` column in both modes.

Idle tenants cost a :class:`Tenant` object and a few dict entries: no pool,
cache or task exists for a tenant until something uses it (bench/tenants_rss.py).

    tenant = hs.tenants.for_host(request.host)       # client API routing
    db = await tenant.database()                       # its rows, in either mode
    store = await tenant.user_store()                  # its accounts and tokens
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from federation.clock import Clock
from homeserver.config import (
    HomeserverConfig,
    QuotasConfig,
    tenant_key_file_name,
    valid_server_name,
)
from homeserver.signing_key import (
    SigningKeyError,
    generate_signing_key_file,
    read_signing_key_file,
)
from storage.database import Database
from storage.errors import StorageError
from storage.migrations import apply_migrations
from storage.stores.tenants import TenantRow, TenantStore
from storage.stores.users import UserStore

__all__ = [
    "Quotas",
    "Tenant",
    "TenantError",
    "TenantRegistry",
    "TenantState",
    "split_host_port",
]

logger = logging.getLogger(__name__)

#: How often a running node re-reads the ``tenants`` table, so tenants
#: created, suspended or removed with the CLI take effect without a restart.
REFRESH_INTERVAL_S = 10.0


class TenantError(Exception):
    """A tenant operation was refused; the message is safe to show an operator."""

    def __init__(self, msg: str, *, not_found: bool = False) -> None:
        super().__init__(msg)
        self.not_found = not_found


class TenantState(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Quotas:
    """Per-tenant limits; ``None`` means unlimited. Enforced by homeserver/quotas.py."""

    #: The smallest value of each limit (as config.py's ``quotas`` section
    #: allows): 0 users or rooms freezes a tenant's growth, but an event rate
    #: of 0 would make every send fail, so it must be at least 1.
    MINIMUMS: ClassVar[dict[str, int]] = {
        "max_users": 0, "max_rooms": 0, "max_events_per_minute": 1,
    }

    max_users: int | None = None
    max_rooms: int | None = None
    max_events_per_minute: int | None = None
    admin_contact: str | None = None

    @classmethod
    def from_config(cls, q: QuotasConfig) -> Quotas:
        return cls(q.max_users, q.max_rooms, q.max_events_per_minute, q.admin_contact)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Quotas:
        return cls(
            raw.get("max_users"),
            raw.get("max_rooms"),
            raw.get("max_events_per_minute"),
            raw.get("admin_contact"),
        )


def split_host_port(host: str) -> tuple[str, str | None]:
    """``"a.example:8448"`` → ``("a.example", "8448")``; IPv6 literals keep brackets."""
    if host.startswith("["):
        end = host.find("]")
        if end >= 0:
            rest = host[end + 1 :]
            return host[: end + 1], (rest[1:] if rest.startswith(":") else None)
        return host, None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


class Tenant:
    """One hosted server name. Attributes are read-only for callers; the
    registry changes :attr:`state` (suspend/resume)."""

    __slots__ = (
        "server_name",
        "source",
        "mode",
        "database_url",
        "client_hostnames",
        "quotas",
        "enable_registration",
        "signing_key_path",
        "state",
        "is_primary",
        "created_ts",
        "_registry",
    )

    def __init__(
        self,
        *,
        server_name: str,
        source: str,
        mode: str,
        database_url: str | None,
        client_hostnames: tuple[str, ...],
        quotas: Quotas,
        enable_registration: bool,
        signing_key_path: str,
        state: TenantState,
        is_primary: bool,
        created_ts: int,
        registry: TenantRegistry,
    ) -> None:
        self.server_name = server_name
        self.source = source
        self.mode = mode
        self.database_url = database_url
        self.client_hostnames = client_hostnames
        self.quotas = quotas
        self.enable_registration = enable_registration
        self.signing_key_path = signing_key_path
        self.state = state
        self.is_primary = is_primary
        self.created_ts = created_ts
        self._registry = registry

    def __repr__(self) -> str:
        return f"<Tenant {self.server_name} {self.mode} {self.state}>"

    @property
    def is_active(self) -> bool:
        return self.state == TenantState.ACTIVE

    async def database(self) -> Database:
        """The database holding this tenant's rows (the one resolver)."""
        return await self._registry.database(self)

    async def user_store(self) -> UserStore:
        """This tenant's accounts, devices and access tokens."""
        return UserStore(await self.database(), self.server_name)

    def signing_keys(self) -> list[Any]:
        """This tenant's signedjson SigningKeys (the first signs), read on first use."""
        return self._registry.signing_keys(self)

    def to_json(self) -> dict[str, Any]:
        """What the admin API and ``homeserver tenant list`` show (no secrets)."""
        return {
            "server_name": self.server_name,
            "state": str(self.state),
            "mode": self.mode,
            "source": self.source,
            "primary": self.is_primary,
            "client_hostnames": list(self.client_hostnames),
            "enable_registration": self.enable_registration,
            "quotas": {k: v for k, v in asdict(self.quotas).items() if v is not None},
            "created_ts": self.created_ts,
        }


def _options(
    client_hostnames: Iterable[str], quotas: Quotas, enable_registration: bool
) -> dict[str, Any]:
    return {
        "client_hostnames": list(client_hostnames),
        "quotas": {k: v for k, v in asdict(quotas).items() if v is not None},
        "enable_registration": enable_registration,
    }


def _ensure_key_file(path: str) -> bool:
    """Create a signing key file at ``path`` unless one is there; True if created.

    An existing file is kept and checked: a tenant removed and created again
    keeps its key, which peers still hold and its old events are signed with.
    """
    if os.path.exists(path):
        read_signing_key_file(path)
        return False
    generate_signing_key_file(path)
    return True


TenantListener = Callable[["Tenant"], Awaitable[None]]


class TenantRegistry:
    """Every tenant of the node, looked up by server name or client Host.

    Build with :meth:`load`; close with :meth:`close` (closes dedicated
    databases). Listeners registered with :meth:`on_added` /
    :meth:`on_removed` hear about tenants created or removed later (the
    HomeServer feeds the KeyService this way).
    """

    def __init__(self, *, config: HomeserverConfig, database: Database, clock: Clock) -> None:
        self._config = config
        self._node_db = database
        self._clock = clock
        self._store = TenantStore(database)
        self._tenants: dict[str, Tenant] = {}
        self._by_host: dict[str, Tenant] = {}
        self._dedicated: dict[str, Database] = {}
        self._opening: dict[str, asyncio.Future[Database]] = {}
        self._keys: dict[str, list[Any]] = {}
        self._added: list[TenantListener] = []
        self._removed: list[TenantListener] = []
        # Bumped by every local change, so a refresh that read the table
        # before the change does not undo it in memory.
        self._generation = 0
        self._refresher: asyncio.Task[None] | None = None
        #: Set after each periodic re-read (tests wait on it after advancing the clock).
        self.refreshed = asyncio.Event()
        self.primary_name = config.server_name

    # -- loading

    @classmethod
    async def load(
        cls,
        *,
        config: HomeserverConfig,
        database: Database,
        clock: Clock,
        primary_signing_keys: list[Any] | None = None,
    ) -> TenantRegistry:
        """Sync the config's tenants into the table, then read every row.

        A config tenant's missing signing key file is created here. Raises
        :class:`TenantError` when a key file cannot be read or written.
        """
        reg = cls(config=config, database=database, clock=clock)
        now = clock.time_ms()
        primary = TenantRow(
            server_name=config.server_name,
            source="config",
            mode="shared",
            database_url=None,
            state=TenantState.ACTIVE,
            signing_key_path=config.signing_key_path,
            options=_options(
                config.client_hostnames,
                Quotas.from_config(config.quotas),
                config.enable_registration,
            ),
            created_ts=now,
        )
        await reg._store.sync_config_tenant(primary)
        if primary_signing_keys is not None:
            reg._keys[config.server_name] = list(primary_signing_keys)
        for t in config.tenants:
            assert t.signing_key_path is not None  # filled in by the loader
            try:
                if _ensure_key_file(t.signing_key_path):
                    logger.info("Created signing key %s for %s", t.signing_key_path, t.server_name)
            except SigningKeyError as e:
                raise TenantError(f"tenant {t.server_name}: {e}") from None
            await reg._store.sync_config_tenant(
                TenantRow(
                    server_name=t.server_name,
                    source="config",
                    mode=t.mode,
                    database_url=t.database_url,
                    state=TenantState.ACTIVE,
                    signing_key_path=t.signing_key_path,
                    options=_options(
                        t.client_hostnames, Quotas.from_config(t.quotas), t.enable_registration
                    ),
                    created_ts=now,
                )
            )
        reg._apply_rows(await reg._store.get_all())
        return reg

    def _declared(self) -> set[str]:
        return {self._config.server_name, *(t.server_name for t in self._config.tenants)}

    def _tenant_from_row(self, row: TenantRow) -> Tenant:
        opts = row.options
        return Tenant(
            server_name=row.server_name,
            source=row.source,
            mode=row.mode,
            database_url=row.database_url,
            client_hostnames=tuple(opts.get("client_hostnames", ())),
            quotas=Quotas.from_json(opts.get("quotas", {})),
            enable_registration=bool(opts.get("enable_registration", False)),
            signing_key_path=row.signing_key_path,
            state=TenantState(row.state),
            is_primary=row.server_name == self.primary_name,
            created_ts=row.created_ts,
            registry=self,
        )

    def _apply_rows(self, rows: list[TenantRow]) -> tuple[list[Tenant], list[Tenant]]:
        """Make memory match the table; returns (added, removed) tenants."""
        declared = self._declared()
        wanted: dict[str, TenantRow] = {}
        for row in rows:
            if row.source == "config" and row.server_name not in declared:
                # Dropped from the config: no longer hosted. The row stays, so
                # declaring it again restores its suspension state.
                continue
            wanted[row.server_name] = row
        added: list[Tenant] = []
        removed: list[Tenant] = []
        for name, row in wanted.items():
            existing = self._tenants.get(name)
            if existing is None:
                tenant = self._tenant_from_row(row)
                self._tenants[name] = tenant
                added.append(tenant)
            else:
                existing.state = TenantState(row.state)
        for name in list(self._tenants):
            if name not in wanted:
                removed.append(self._tenants.pop(name))
                self._keys.pop(name, None)
        self._reindex()
        return added, removed

    def _reindex(self) -> None:
        by_host: dict[str, Tenant] = {}
        for t in self._tenants.values():
            by_host[t.server_name.lower()] = t
            for h in t.client_hostnames:
                by_host.setdefault(h.lower(), t)
        self._by_host = by_host

    # -- lookups

    def __len__(self) -> int:
        return len(self._tenants)

    def all(self) -> list[Tenant]:
        """Every tenant: the node's own name first, then by creation."""
        return sorted(
            self._tenants.values(),
            key=lambda t: (not t.is_primary, t.created_ts, t.server_name),
        )

    def get(self, server_name: str) -> Tenant | None:
        """The tenant named exactly ``server_name`` (any state), or None."""
        return self._tenants.get(server_name)

    def hosts(self, server_name: str) -> bool:
        return server_name in self._tenants

    @property
    def primary(self) -> Tenant:
        return self._tenants[self.primary_name]

    @property
    def single_tenant(self) -> bool:
        return len(self._tenants) == 1

    def for_host(self, host: str | None) -> Tenant | None:
        """The tenant whose client API answers on ``host`` (a Host header).

        A single-tenant node answers on every host. Otherwise the host must
        be a tenant's server name or one of its client hostnames; the port
        is compared only when the configured name carries one.
        """
        if self.single_tenant:
            return self.primary
        if not host:
            return None
        h = host.strip().lower()
        if h.endswith("."):
            h = h[:-1]
        found = self._by_host.get(h)
        if found is not None:
            return found
        name, port = split_host_port(h)
        if port is not None:
            candidate = self._by_host.get(name)
            # Only a name configured without a port ignores the request's port.
            if candidate is not None and split_host_port(name)[1] is None:
                return candidate
        return None

    # -- the resolver

    async def database(self, tenant: Tenant) -> Database:
        """The tenant's database: the node's (shared) or its own (dedicated)."""
        if tenant.mode != "dedicated":
            return self._node_db
        db = self._dedicated.get(tenant.server_name)
        if db is not None:
            return db
        pending = self._opening.get(tenant.server_name)
        if pending is None:
            pending = asyncio.ensure_future(self._open_dedicated(tenant))
            self._opening[tenant.server_name] = pending
            pending.add_done_callback(lambda _f: self._opening.pop(tenant.server_name, None))
        return await asyncio.shield(pending)

    async def _open_dedicated(self, tenant: Tenant) -> Database:
        assert tenant.database_url is not None
        db = await Database.open(
            tenant.database_url,
            connect_timeout=self._config.database.connect_timeout / 1000,
            clock=self._clock,
        )
        try:
            # Cheap when up to date; covers a Concord upgrade with new migrations.
            await apply_migrations(db)
        except BaseException:
            await db.close()
            raise
        self._dedicated[tenant.server_name] = db
        return db

    def signing_keys(self, tenant: Tenant) -> list[Any]:
        keys = self._keys.get(tenant.server_name)
        if keys is None:
            try:
                keys = read_signing_key_file(tenant.signing_key_path)
            except SigningKeyError as e:
                raise TenantError(f"tenant {tenant.server_name}: signing key: {e}") from None
            self._keys[tenant.server_name] = keys
        return list(keys)

    def set_signing_keys(self, server_name: str, keys: list[Any]) -> None:
        """Sign as ``server_name`` with ``keys`` from now on (key rotation,
        docs/usage/key_rotation.md)."""
        if server_name in self._tenants:
            self._keys[server_name] = list(keys)

    # -- changes

    def on_added(self, fn: TenantListener) -> None:
        self._added.append(fn)

    def on_removed(self, fn: TenantListener) -> None:
        self._removed.append(fn)

    def _claimed_by(self, name: str) -> Tenant | None:
        found = self._by_host.get(name.lower())
        if found is not None:
            return found
        return None

    async def create(
        self,
        server_name: str,
        *,
        mode: str = "shared",
        database_url: str | None = None,
        client_hostnames: Iterable[str] = (),
        quotas: Quotas | None = None,
        enable_registration: bool = False,
        key_dir: str | None = None,
    ) -> Tenant:
        """Create a tenant at run time: its signing key, its database (dedicated
        mode: opened and migrated now), then its row. Raises TenantError."""
        hostnames = tuple(client_hostnames)
        quotas = quotas or Quotas()
        if not valid_server_name(server_name):
            raise TenantError(f"{server_name!r} is not a valid server name (host[:port])")
        for h in hostnames:
            if not valid_server_name(h):
                raise TenantError(f"{h!r} is not a valid host name")
        if mode not in ("shared", "dedicated"):
            raise TenantError(f"mode must be 'shared' or 'dedicated', not {mode!r}")
        if mode == "dedicated" and not database_url:
            raise TenantError("a dedicated tenant needs a database URL (--database-url)")
        if mode == "shared" and database_url:
            raise TenantError("a database URL only applies to a dedicated tenant")
        for name in (server_name, *hostnames):
            owner = self._claimed_by(name)
            if owner is not None and owner.server_name == name:
                raise TenantError(f"tenant {name} already exists")
            if owner is not None:
                raise TenantError(f"{name} is already used by tenant {owner.server_name}")
        if await self._store.get(server_name) is not None:
            raise TenantError(f"tenant {server_name} already exists")
        for field_name, value in asdict(quotas).items():
            least = Quotas.MINIMUMS.get(field_name)
            if (
                least is not None
                and value is not None
                and (not isinstance(value, int) or isinstance(value, bool) or value < least)
            ):
                raise TenantError(f"quota {field_name} must be an integer of at least {least}")

        key_dir = key_dir or os.path.join(self._config.data_dir, "tenants")
        key_path = os.path.join(key_dir, tenant_key_file_name(server_name))
        row = TenantRow(
            server_name=server_name,
            source="runtime",
            mode=mode,
            database_url=database_url,
            state=TenantState.ACTIVE,
            signing_key_path=key_path,
            options=_options(hostnames, quotas, enable_registration),
            created_ts=self._clock.time_ms(),
        )
        tenant = self._tenant_from_row(row)
        if mode == "dedicated":
            # First, so an unusable database leaves nothing behind (no key, no row).
            try:
                await self.database(tenant)
            except StorageError as e:
                raise TenantError(f"tenant database: {e}") from None
        try:
            _ensure_key_file(key_path)
        except SigningKeyError as e:
            await self._close_dedicated(server_name)
            raise TenantError(f"signing key: {e}") from None
        self._generation += 1
        if not await self._store.insert(row):
            await self._close_dedicated(server_name)
            raise TenantError(f"tenant {server_name} already exists")
        self._tenants[server_name] = tenant
        self._reindex()
        for fn in self._added:
            await fn(tenant)
        return tenant

    def _require(self, server_name: str) -> Tenant:
        tenant = self._tenants.get(server_name)
        if tenant is None:
            raise TenantError(f"no tenant named {server_name}", not_found=True)
        return tenant

    async def set_state(self, server_name: str, state: TenantState) -> Tenant:
        """Suspend or resume a tenant (persisted). The primary cannot be suspended:
        its admins run the admin API."""
        tenant = self._require(server_name)
        if tenant.is_primary and state == TenantState.SUSPENDED:
            raise TenantError(
                f"{server_name} is the node's own server name and cannot be suspended"
            )
        self._generation += 1
        await self._store.set_state(server_name, state)
        tenant.state = state
        return tenant

    async def remove(self, server_name: str) -> None:
        """Stop hosting a run-time tenant and forget its accounts and tokens.

        Room data in a shared database is kept (it is scoped by tenant and no
        longer reachable); a dedicated database is closed, not dropped.
        Config-declared tenants are removed by editing the config.
        """
        tenant = self._require(server_name)
        if tenant.source == "config":
            raise TenantError(
                f"{server_name} is declared in the config; remove it there and restart"
            )
        self._generation += 1
        store = await tenant.user_store()
        await store.delete_tenant_rows()
        await self._store.delete(server_name)
        self._tenants.pop(server_name, None)
        self._keys.pop(server_name, None)
        self._reindex()
        await self._close_dedicated(server_name)
        for fn in self._removed:
            await fn(tenant)

    async def refresh(self) -> None:
        """Re-read the table (changes made by the CLI or another process)."""
        generation = self._generation
        rows = await self._store.get_all()
        if generation != self._generation:
            return
        added, removed = self._apply_rows(rows)
        for t in added:
            for fn in self._added:
                await fn(t)
        for t in removed:
            await self._close_dedicated(t.server_name)
            for fn in self._removed:
                await fn(t)

    def start_refreshing(self, interval_s: float = REFRESH_INTERVAL_S) -> None:
        """Re-read the table every ``interval_s`` of the clock (one task per node)."""
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh_loop(interval_s))

    async def _refresh_loop(self, interval_s: float) -> None:
        while True:
            await self._clock.sleep(interval_s)
            self.refreshed.clear()
            try:
                await self.refresh()
            except Exception:
                logger.exception("Re-reading the tenants table failed")
            self.refreshed.set()

    async def _close_dedicated(self, server_name: str) -> None:
        db = self._dedicated.pop(server_name, None)
        if db is not None:
            await db.close()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        for name in list(self._dedicated):
            await self._close_dedicated(name)
