"""The composition root: builds one running homeserver from its config.

:class:`HomeServer` holds the few collaborators everything else is built
from (config, clock, database, signing keys, outbound HTTP session, metrics)
as plain attributes. It is *not* a service locator: registrars in
``homeserver/rest`` construct each servlet and handler from exactly the
collaborators it needs.

    hs = await HomeServer.start(config, clock=FakeClock())
    url = hs.base_url("client")
    ...
    await hs.stop()
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from federation.clock import Clock, RealClock
from homeserver import __version__
from homeserver.auth import Auth
from homeserver.config import HomeserverConfig, ListenerType
from homeserver.federation_sender.node import start_federation_outbound
from homeserver.handlers.accounts import AccountHandler
from homeserver.http.listeners import (
    BoundAddress,
    ListenerError,
    RunningListener,
    build_app,
    start_listener,
)
from homeserver.key_rotation import wire_key_rotation
from homeserver.keys import KeyService
from homeserver.metrics import Metrics
from homeserver.passwords import PasswordHasher
from homeserver.quotas import QuotaEnforcer
from homeserver.ratelimit import Ratelimiter
from homeserver.rest import REGISTRARS, Registrar
from homeserver.signing_key import SigningKeyError, key_id_of, read_signing_key_file
from homeserver.tenants import TenantError, TenantRegistry
from homeserver.trust_domain import TrustDomain, attach_sender, install_trust
from storage.database import Database
from storage.errors import StorageError
from storage.migrations import apply_migrations

__all__ = ["HomeServer", "StartupError", "federation_ssl_context"]

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start; the message tells the operator why (no traceback needed)."""


def federation_ssl_context(config: HomeserverConfig) -> ssl.SSLContext:
    """TLS settings for outbound federation requests, from ``federation.*``."""
    ctx = ssl.create_default_context()
    if config.federation.ca_file is not None:
        ctx.load_verify_locations(cafile=config.federation.ca_file)
    if not config.federation.verify_certificates:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class HomeServer:
    """A started homeserver. Build it with :meth:`start`; end it with :meth:`stop`."""

    def __init__(
        self,
        *,
        config: HomeserverConfig,
        clock: Clock,
        database: Database,
        signing_keys: Sequence[Any],
        http_client: aiohttp.ClientSession,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.clock = clock
        self.database = database
        #: signedjson SigningKeys from ``signing_key_path``; the first one signs.
        self.signing_keys = list(signing_keys)
        #: Outbound HTTP (federation), TLS per ``federation.verify_certificates``/``ca_file``.
        self.http_client = http_client
        self.metrics = metrics
        #: Our keys per hosted name, the keyring and the signed federation client.
        self.keys: KeyService | None = None
        #: Every hosted server name and the resolver to its database (set by start).
        self.tenants: TenantRegistry = None  # type: ignore[assignment]
        #: Who each hosted name federates with (docs/usage/trust_domain.md; set by start).
        self.trust: TrustDomain | None = None
        #: Access tokens to Requesters, against the request's tenant.
        self.auth = Auth()
        #: Per-tenant quota checks (homeserver/quotas.py says who calls what).
        self.quotas = QuotaEnforcer(clock)
        rc = config.ratelimiting
        #: Registration, login and sessions of every tenant's users.
        self.accounts = AccountHandler(
            clock=clock,
            hasher=PasswordHasher(config.password_hash_rounds),
            quotas=self.quotas,
            login_per_address=Ratelimiter(
                clock,
                per_second=rc.login_per_address_per_second,
                burst=rc.login_per_address_burst,
            ),
            login_per_account=Ratelimiter(
                clock,
                per_second=rc.login_per_account_per_second,
                burst=rc.login_per_account_burst,
            ),
        )
        self.listeners: list[RunningListener] = []
        self._stopped = False

    @property
    def server_name(self) -> str:
        return self.config.server_name

    @property
    def signing_key(self) -> Any:
        return self.signing_keys[0]

    @property
    def addresses(self) -> list[BoundAddress]:
        return [a for li in self.listeners for a in li.addresses]

    @property
    def listening_ports(self) -> dict[str, list[int]]:
        """Bound ports by listener type (``{"client": [8008], ...}``), port 0 resolved."""
        ports: dict[str, list[int]] = {}
        for a in self.addresses:
            ports.setdefault(a.type, []).append(a.port)
        return ports

    def base_url(self, listener_type: ListenerType = "client") -> str:
        """URL of the first listener of that type (``http://127.0.0.1:PORT``)."""
        for a in self.addresses:
            if a.type == listener_type:
                return a.url
        raise KeyError(f"no {listener_type} listener is running")

    @classmethod
    async def start(
        cls,
        config: HomeserverConfig,
        *,
        clock: Clock | None = None,
        registrars: Mapping[ListenerType, Sequence[Registrar]] | None = None,
    ) -> HomeServer:
        """Open the database, apply migrations, load keys and start every listener.

        ``registrars`` defaults to :data:`homeserver.rest.REGISTRARS` (tests pass
        extra routes). Raises :class:`StartupError` with an operator-facing message.
        """
        clock = clock or RealClock()
        try:
            signing_keys = read_signing_key_file(config.signing_key_path)
        except SigningKeyError as e:
            raise StartupError(f"signing key: {e}") from None
        if not config.federation.verify_certificates:
            logger.warning(
                "federation.verify_certificates is false: outbound federation accepts ANY "
                "certificate. Use this only for test setups."
            )
        try:
            ssl_context = federation_ssl_context(config)
        except (OSError, ssl.SSLError) as e:
            raise StartupError(f"federation.ca_file: {e}") from None

        try:
            database = await Database.open(
                config.database.url,
                connect_timeout=config.database.connect_timeout / 1000,
                clock=clock,
            )
        except StorageError as e:
            raise StartupError(str(e)) from None
        hs: HomeServer | None = None
        try:
            try:
                applied = await apply_migrations(database)
            except StorageError as e:
                raise StartupError(str(e)) from None
            if applied:
                logger.info("Applied database migrations %s", ", ".join(map(str, applied)))
            http_client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context),
                headers={"User-Agent": f"Concord/{__version__}"},
            )
            hs = cls(
                config=config,
                clock=clock,
                database=database,
                signing_keys=signing_keys,
                http_client=http_client,
                metrics=Metrics(),
            )
            hs.keys = KeyService.build(
                config=config,
                clock=clock,
                database=database,
                session=http_client,
                signing_keys=signing_keys,
            )
            try:
                hs.tenants = await TenantRegistry.load(
                    config=config,
                    database=database,
                    clock=clock,
                    primary_signing_keys=signing_keys,
                )
                await _host_tenants(hs.tenants, hs.keys)
            except TenantError as e:
                raise StartupError(str(e)) from None
            await hs.keys.start()
            hs.tenants.start_refreshing()
            # Before outbound federation starts: nothing leaves unchecked.
            trust = await install_trust(hs)
            wire_key_rotation(hs)
            # Outbound federation: hs.federation_sender and hs.remote_rooms.
            await start_federation_outbound(hs)
            attach_sender(trust, getattr(hs, "federation_sender", None))
            await hs._start_listeners(REGISTRARS if registrars is None else registrars)
        except BaseException:
            if hs is not None:
                await hs.stop()
            else:
                await database.close()
            raise
        logger.info(
            "Concord %s started for %s (database: %s, signing key %s)",
            __version__,
            config.server_name,
            database.engine,
            key_id_of(hs.signing_key),
        )
        return hs

    async def _start_listeners(
        self, registrars: Mapping[ListenerType, Sequence[Registrar]]
    ) -> None:
        for cfg in self.config.listeners:
            fns = [_bind_hs(fn, self) for fn in registrars.get(cfg.type, ())]
            max_size = self.config.max_request_size
            if cfg.type == "federation":
                max_size = min(max_size, self.config.federation.max_request_size)
            app = build_app(
                cfg.type,
                register=fns,
                metrics=self.metrics,
                clock=self.clock,
                max_request_size=max_size,
            )
            try:
                running = await start_listener(
                    cfg, app, shutdown_timeout=self.config.shutdown_timeout / 1000
                )
            except ListenerError as e:
                raise StartupError(str(e)) from None
            self.listeners.append(running)
            for a in running.addresses:
                logger.info("Listening on %s (%s)", a.url, a.type)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to ``shutdown_timeout``),
        then close the outbound session and the database. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # All listeners stop accepting and drain together, so the bound on the
        # wait is shutdown_timeout, not one per listener.
        await asyncio.gather(*(li.runner.cleanup() for li in self.listeners))
        sender = getattr(self, "federation_sender", None)
        if sender is not None:
            await sender.stop()
        if self.keys is not None:
            await self.keys.close()
        if self.tenants is not None:
            await self.tenants.close()
        await self.http_client.close()
        await self.database.close()
        logger.info("Stopped %s", self.server_name)


async def _host_tenants(tenants: TenantRegistry, keys: KeyService) -> None:
    """Publish every tenant's keys now, and follow tenants created or removed later."""
    for tenant in tenants.all():
        if not tenant.is_primary:
            await keys.add_hosted(tenant.server_name, tenant.signing_keys())

    async def added(tenant: Any) -> None:
        await keys.add_hosted(tenant.server_name, tenant.signing_keys())

    async def removed(tenant: Any) -> None:
        keys.remove_hosted(tenant.server_name)

    tenants.on_added(added)
    tenants.on_removed(removed)


def _bind_hs(fn: Registrar, hs: HomeServer) -> Any:
    def register(app: web.Application) -> None:
        fn(app, hs)

    return register
