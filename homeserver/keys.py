"""Our signing keys and the keyring, assembled for one node.

Spec: server-server API "Retrieving server keys". :class:`KeyService` holds,
per server name this node hosts, the signing keys from the key file and the
retired keys to publish under ``old_verify_keys`` (from config
``old_signing_keys`` and from the ``local_signing_keys`` table, so a key
rotated out of the key file keeps being published after a restart). It also
owns the node's :class:`~federation.keyring.Keyring` (origin first, then the
trusted notaries of ``federation.trusted_key_servers``, cached in the
database) and the signed federation client the keyring fetches through.

Rotation (docs/usage/key_rotation.md): ``homeserver keys rotate`` changes
the key file and ``local_signing_keys``; :meth:`KeyService.refresh_local`
notices (a poll every :data:`KEY_REFRESH_INTERVAL_S` and on SIGHUP), re-reads
the key file and signs with the new key from then on, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from signedjson.types import SigningKey

from federation.clock import Clock
from federation.keyring import (
    DirectKeyFetcher,
    KeyFetcher,
    Keyring,
    NotaryKeyFetcher,
    NotarySpec,
    local_fetched_keys,
)
from federation.server_keys import (
    KeyLookupError,
    OldVerifyKey,
    build_server_key_response,
    decode_verify_key,
    key_id_of,
    verify_key_of,
)
from federation.transport.client import FederationClient
from federation.transport.discovery import ServerDiscovery
from homeserver.config import HomeserverConfig
from homeserver.signing_key import SigningKeyError, read_signing_key_file
from storage.database import Database
from storage.stores.key_rotation import KeyRotationStore
from storage.stores.keys import KeyStore

__all__ = ["KEY_REFRESH_INTERVAL_S", "KeyService", "key_service_for", "notary_specs"]

logger = logging.getLogger(__name__)

#: How often a running node looks for keys rotated or revoked by the CLI.
KEY_REFRESH_INTERVAL_S = 10.0


def notary_specs(config: HomeserverConfig) -> list[NotarySpec]:
    """Trusted key servers from config, with their pinned keys decoded.

    A notary without pinned keys is skipped with a warning: nothing would
    stop it from lying about every server's keys.
    """
    out: list[NotarySpec] = []
    for ks in config.federation.trusted_key_servers:
        if not ks.verify_keys:
            logger.warning(
                "federation.trusted_key_servers: %s has no verify_keys; not using it "
                "(its answers could not be checked)",
                ks.server_name,
            )
            continue
        keys = {}
        for key_id, b64 in ks.verify_keys.items():
            try:
                keys[key_id] = decode_verify_key(key_id, b64)
            except KeyLookupError as e:
                raise ValueError(f"federation.trusted_key_servers: {ks.server_name}: {e}") from None
        out.append(NotarySpec(ks.server_name, keys))
    return out


class KeyService:
    """Own keys per hosted name, our key response, the keyring and its client."""

    def __init__(
        self,
        *,
        hosted: Mapping[str, Sequence[SigningKey]],
        configured_old: Mapping[str, Sequence[OldVerifyKey]],
        store: KeyStore,
        keyring: Keyring,
        client: FederationClient,
        clock: Clock,
        validity_ms: int,
        rotation: KeyRotationStore | None = None,
    ) -> None:
        self._hosted = {name: list(keys) for name, keys in hosted.items()}
        self._configured_old = {name: list(v) for name, v in configured_old.items()}
        self._old: dict[str, list[OldVerifyKey]] = {name: [] for name in hosted}
        self.store = store
        #: Key states written by ``homeserver keys`` (rotate, revoke).
        self.rotation = rotation
        self.keyring = keyring
        self.client = client
        self._clock = clock
        self._validity_ms = validity_ms
        self._responses: dict[str, tuple[int, dict[str, Any]]] = {}
        self._ready: asyncio.Task[None] | None = None
        #: The key file of each hosted name (set by the node), re-read after a rotation.
        self.key_path_for: Callable[[str], str | None] | None = None
        #: Told ``(server_name, signing_keys)`` when a name's keys change at run time.
        self.on_keys_changed: list[Callable[[str, list[SigningKey]], None]] = []
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()

    @classmethod
    def build(
        cls,
        *,
        config: HomeserverConfig,
        clock: Clock,
        database: Database,
        session: aiohttp.ClientSession,
        signing_keys: Sequence[SigningKey],
        ssl_context: ssl.SSLContext | None = None,
        destination_overrides: Mapping[str, str] | None = None,
    ) -> KeyService:
        """Wire the service from config; call :meth:`start` before serving."""
        name = config.server_name
        configured_old = [
            OldVerifyKey(k.key_id, decode_verify_key(k.key_id, k.public_key), k.expired_ts)
            for k in config.old_signing_keys
        ]
        client = FederationClient(
            session,
            signing_keys={name: signing_keys[0]},
            default_origin=name,
            ssl_context=ssl_context,
            destination_overrides=(
                config.federation.destination_overrides
                if destination_overrides is None
                else destination_overrides
            ),
            discovery=ServerDiscovery(session, clock, ssl_context=ssl_context),
        )
        store = KeyStore(database)
        fetchers: list[KeyFetcher] = [DirectKeyFetcher(client, clock)]
        fetchers += [NotaryKeyFetcher(client, clock, spec) for spec in notary_specs(config)]
        keyring = Keyring(fetchers, store, clock)
        return cls(
            hosted={name: signing_keys},
            configured_old={name: configured_old},
            store=store,
            keyring=keyring,
            client=client,
            clock=clock,
            validity_ms=config.key_validity_period,
            rotation=KeyRotationStore(database),
        )

    async def start(self) -> None:
        """Record our keys (retiring any that left the key file); idempotent."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        for name in list(self._hosted):
            await self._sync_local(name)

    async def _sync_local(self, name: str) -> None:
        keys = self._hosted[name]
        now = self._clock.time_ms()
        current = {key_id_of(k): verify_key_of(k) for k in keys}
        revoked = (
            set() if self.rotation is None else await self.rotation.revoked_ids(name, current)
        )
        if revoked:
            raise ValueError(
                f"the signing key file of {name} holds revoked key(s) {sorted(revoked)}; "
                "rotate to a new key (homeserver keys rotate)"
            )
        self._old[name] = await self.store.sync_local_keys(
            name, current, self._configured_old.get(name, []), now
        )
        self.keyring.set_local_keys(name, local_fetched_keys(name, keys, self._old[name]))
        for ok in self._old[name]:
            logger.info("Publishing retired key %s of %s as old", ok.key_id, name)

    async def add_hosted(self, server_name: str, keys: Sequence[SigningKey]) -> None:
        """Host another server name (a tenant): publish its keys, sign as it.

        Before :meth:`start` this only records it (start syncs every name).
        """
        self._hosted[server_name] = list(keys)
        self._old.setdefault(server_name, [])
        self._responses.pop(server_name, None)
        self.client.set_signing_key(server_name, keys[0])
        if self._ready is not None:
            await self.start()
            await self._sync_local(server_name)

    def replace_signing_keys(self, server_name: str, keys: Sequence[SigningKey]) -> None:
        """Sign as ``server_name`` with ``keys`` from now on (after a rotation)."""
        self._hosted[server_name] = list(keys)
        self._responses.pop(server_name, None)
        self.client.set_signing_key(server_name, keys[0])
        self.keyring.set_local_keys(
            server_name, local_fetched_keys(server_name, keys, self._old.get(server_name, []))
        )
        for fn in self.on_keys_changed:
            fn(server_name, list(keys))

    async def refresh_local(self) -> list[str]:
        """Pick up keys rotated or revoked since start (``homeserver keys``).

        For each hosted name, ``local_signing_keys`` says which keys are
        current and which are old; when the current ones differ from the ones
        in memory, the key file is read again and, if it holds exactly the
        recorded current keys, they sign from now on (a file not yet renamed
        into place is left for the next look). Returns the names whose
        published keys changed.
        """
        if self._ready is None or self.rotation is None:
            return []
        await self.start()
        changed: list[str] = []
        rotation = self.rotation
        async with self._refresh_lock:
            for name in list(self._hosted):
                records = [r for r in await rotation.get_keys(name) if r.revoked_ts is None]
                recorded = {r.key_id for r in records if r.expired_ts is None}
                in_memory = {key_id_of(k) for k in self._hosted[name]}
                swapped = False
                if recorded and recorded != in_memory:
                    path = self.key_path_for(name) if self.key_path_for is not None else None
                    try:
                        keys = read_signing_key_file(path) if path else []
                    except SigningKeyError as e:
                        logger.warning("Key file of %s unreadable after a rotation: %s", name, e)
                        keys = []
                    if keys and {key_id_of(k) for k in keys} == recorded:
                        self._hosted[name] = keys
                        swapped = True
                old = [
                    OldVerifyKey(r.key_id, r.verify_key, r.expired_ts)
                    for r in records
                    if r.expired_ts is not None
                ]
                before = {o.key_id: o.expired_ts for o in self._old.get(name, [])}
                if swapped or before != {o.key_id: o.expired_ts for o in old}:
                    self._old[name] = old
                    self.replace_signing_keys(name, self._hosted[name])
                    changed.append(name)
                    logger.info(
                        "Keys of %s reloaded: signing with %s; old keys published: %s",
                        name,
                        key_id_of(self._hosted[name][0]),
                        ", ".join(o.key_id for o in old) or "none",
                    )
        return changed

    def start_refreshing(self, interval_s: float = KEY_REFRESH_INTERVAL_S) -> None:
        """Call :meth:`refresh_local` every ``interval_s`` of the clock."""
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh_loop(interval_s))

    async def _refresh_loop(self, interval_s: float) -> None:
        while True:
            await self._clock.sleep(interval_s)
            try:
                await self.refresh_local()
            except Exception:
                logger.exception("Looking for rotated signing keys failed")

    def remove_hosted(self, server_name: str) -> None:
        """Stop publishing keys for a server name no longer hosted here."""
        self._hosted.pop(server_name, None)
        self._old.pop(server_name, None)
        self._responses.pop(server_name, None)

    @property
    def server_names(self) -> list[str]:
        return list(self._hosted)

    def hosts(self, server_name: str) -> bool:
        return server_name in self._hosted

    def signing_keys(self, server_name: str) -> list[SigningKey]:
        return list(self._hosted[server_name])

    async def key_response(self, server_name: str) -> dict[str, Any]:
        """Our signed ``GET /_matrix/key/v2/server`` body for ``server_name``.

        Rebuilt once half of its validity has passed, so what we serve is
        always valid for at least half of ``key_validity_period`` (and a
        notary caching it for half its lifetime never serves it expired).
        """
        await self.start()
        now = self._clock.time_ms()
        cached = self._responses.get(server_name)
        if cached is not None and now < cached[0] + self._validity_ms // 2:
            return cached[1]
        body = build_server_key_response(
            server_name,
            self._hosted[server_name],
            self._old[server_name],
            now_ms=now,
            validity_ms=self._validity_ms,
        )
        self._responses[server_name] = (now, body)
        return body

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.keyring.close()


def key_service_for(hs: Any) -> KeyService:
    """The node's KeyService: ``hs.keys`` (set by ``HomeServer.start``), built
    on first use for a HomeServer that does not set it."""
    ks = getattr(hs, "keys", None)
    if ks is None:
        ks = KeyService.build(
            config=hs.config,
            clock=hs.clock,
            database=hs.database,
            session=hs.http_client,
            signing_keys=hs.signing_keys,
        )
        hs.keys = ks
    assert isinstance(ks, KeyService)
    return ks
