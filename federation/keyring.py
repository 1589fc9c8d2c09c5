"""The keyring: remote servers' signing keys, fetched, checked and cached.

Spec: server-server API "Retrieving server keys", "Validating hashes and
signatures on received events", and v5-signing-requirements.md (a key is
valid up to the lesser of its ``valid_until_ts`` and 7 days after we fetched
it; "Servers missing a copy of the signing key MUST try to obtain one via
GET /_matrix/key/v2/server or POST /_matrix/key/v2/query", the latter with
``minimum_valid_until_ts`` set).

The keyring is an I/O edge: it needs :class:`KeyFetcher` s (the origin
itself, then trusted notaries) and a :class:`KeyCache` (the database store in
production, :class:`MemoryKeyCache` in unit tests). Both are Protocols so the
logic here is tested with dict fakes and a FakeClock.

Behaviour:

- keys valid for ``for_ts`` come from the cache; a key ID we do not know, or
  a key whose validity ends before ``for_ts``, triggers a fetch;
- ``old_verify_keys`` verify only what was signed before their ``expired_ts``
  and never a request;
- fetchers are tried in order; what one fetcher could not give, the next is
  asked for;
- concurrent lookups for one server are batched into one request, and a
  lookup that arrives while a request to that server is in flight waits for
  it before asking again;
- key IDs nobody could give are remembered for ``negative_ttl_ms`` so a peer
  sending junk key IDs cannot make us hammer the origin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from canonicaljson import encode_canonical_json
from nacl.signing import VerifyKey
from signedjson.types import SigningKey

from federation.clock import Clock
from federation.room_versions import RoomVersion
from federation.server_keys import (
    FetchedKey,
    KeyLookupError,
    OldVerifyKey,
    key_id_of,
    parse_server_key_response,
    verify_key_of,
    verify_notary_signature,
)
from federation.signing import (
    SignatureVerifyError,
    VerifiedPdu,
    required_signers,
    verify_json_signature,
    verify_pdu,
)

__all__ = [
    "BadSignatureError",
    "DirectKeyFetcher",
    "KeyCache",
    "KeyFetcher",
    "KeyHttpClient",
    "Keyring",
    "MemoryKeyCache",
    "NotarySpec",
    "NotaryKeyFetcher",
    "SignatureCheckError",
    "UnknownKeyError",
    "UnsignedError",
    "local_fetched_keys",
]

logger = logging.getLogger(__name__)

# At most this many servers' keys are looked up for one PDU.
_MAX_SIGNERS = 10

# A key of one of our own server names never needs refreshing.
_FOREVER_MS = 2**62
# Keys held in the keyring's memory before it starts over (a key is ~200 bytes).
_MEMORY_MAX_KEYS = 10_000


class SignatureCheckError(Exception):
    """A JSON object's signature by a server could not be accepted."""


class UnsignedError(SignatureCheckError):
    """The object carries no signature by the server at all."""


class UnknownKeyError(SignatureCheckError):
    """None of the key IDs it was signed with could be found (valid at that time)."""


class BadSignatureError(SignatureCheckError):
    """A signature by a known key does not verify."""


class KeyFetcher(Protocol):
    """Where keys come from: the origin itself, or a notary.

    ``direct`` is true for a fetcher that asks the origin; only those are used
    when we act as a notary ourselves, so two notaries never ask each other.
    """

    name: str
    direct: bool

    async def fetch(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> dict[str, FetchedKey]:
        """Keys of ``server_name`` (possibly more than asked for).

        Raises :class:`KeyLookupError` or transport errors on failure; the
        keyring logs them and moves on to the next fetcher.
        """
        ...


class KeyCache(Protocol):
    """Persisted remote keys (``storage/stores/keys.py`` in production)."""

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> dict[str, FetchedKey]:
        """The cached keys of ``server_name``; all of them when ``key_ids`` is None."""
        ...

    async def store_server_keys(self, server_name: str, keys: Mapping[str, FetchedKey]) -> None:
        """Insert or replace the given keys (newer information wins)."""
        ...


class KeyHttpClient(Protocol):
    """The slice of the federation HTTP client the fetchers need."""

    async def get_json(
        self, destination: str, path: str, *, timeout_s: float | None = None
    ) -> Any: ...

    async def post_json(
        self, destination: str, path: str, body: Any, *, timeout_s: float | None = None
    ) -> Any: ...


class MemoryKeyCache:
    """A dict-backed :class:`KeyCache` (unit tests, and a node without a DB)."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, FetchedKey]] = {}

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> dict[str, FetchedKey]:
        have = self.keys.get(server_name, {})
        if key_ids is None:
            return dict(have)
        return {k: have[k] for k in key_ids if k in have}

    async def store_server_keys(self, server_name: str, keys: Mapping[str, FetchedKey]) -> None:
        self.keys.setdefault(server_name, {}).update(keys)


def local_fetched_keys(
    server_name: str, signing_keys: Iterable[SigningKey], old_keys: Iterable[OldVerifyKey]
) -> dict[str, FetchedKey]:
    """Our own keys in the keyring's shape, so we verify ourselves without HTTP."""
    out: dict[str, FetchedKey] = {}
    for ok in old_keys:
        out[ok.key_id] = FetchedKey(
            server_name=server_name,
            key_id=ok.key_id,
            verify_key=ok.verify_key,
            valid_until_ts=ok.expired_ts,
            fetched_ts=0,
            expired_ts=ok.expired_ts,
        )
    for sk in signing_keys:
        kid = key_id_of(sk)
        out[kid] = FetchedKey(
            server_name=server_name,
            key_id=kid,
            verify_key=verify_key_of(sk),
            valid_until_ts=_FOREVER_MS,
            fetched_ts=0,
        )
    return out


@dataclass
class _Batch:
    """One request to a server, collecting the key IDs of concurrent lookups."""

    key_ids: set[str] = field(default_factory=set)
    minimum_valid_until_ts: int = 0
    started: bool = False
    done: asyncio.Future[None] | None = None


class Keyring:
    """Remote server keys for signature checks.

    ``fetchers`` are tried in order (origin first, then notaries).
    ``local_keys`` maps each server name we host to its keys: lookups for
    those never leave the process.
    """

    def __init__(
        self,
        fetchers: Sequence[KeyFetcher],
        cache: KeyCache,
        clock: Clock,
        *,
        negative_ttl_ms: int = 60_000,
        local_keys: Mapping[str, Mapping[str, FetchedKey]] | None = None,
    ) -> None:
        self._fetchers = list(fetchers)
        self._cache = cache
        self._clock = clock
        self._negative_ttl_ms = negative_ttl_ms
        self._local: dict[str, dict[str, FetchedKey]] = {
            name: dict(keys) for name, keys in (local_keys or {}).items()
        }
        self._batches: dict[str, _Batch] = {}
        self._negative: dict[tuple[str, str], int] = {}
        # The cache's keys as last read or stored by this keyring, so a PDU's
        # signature check costs no database round trip once its key is known.
        # An entry only answers when it is valid for the signature at hand;
        # otherwise the cache is read again (another process may have
        # refreshed it).
        self._memory: dict[tuple[str, str], FetchedKey] = {}
        # Completed requests per server: a lookup that sees this change while
        # it reads the cache knows a fresh answer just arrived.
        self._generations: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The trust domain (docs/usage/trust_domain.md): keys of a server it
        #: refuses are never fetched (lookups find nothing), and a notary it
        #: refuses is never asked. ``None``: every server.
        self.server_filter: Callable[[str], bool] | None = None

    def _trusted(self, server_name: str) -> bool:
        return self.server_filter is None or self.server_filter(server_name)

    # -- our own keys ------------------------------------------------------------

    def set_local_keys(self, server_name: str, keys: Mapping[str, FetchedKey]) -> None:
        """Register (or replace, after a rotation) the keys of a name we host."""
        self._local[server_name] = dict(keys)

    def is_local(self, server_name: str) -> bool:
        return server_name in self._local

    # -- lookups -----------------------------------------------------------------

    async def get_verify_keys(
        self,
        server_name: str,
        key_ids: Collection[str],
        for_ts: int,
        *,
        allow_old: bool = True,
    ) -> dict[str, FetchedKey]:
        """The keys among ``key_ids`` that may verify a signature made at ``for_ts``.

        Key IDs that cannot be found (or are not valid at ``for_ts``) are
        simply absent from the result. ``allow_old=False`` is for request
        authentication: keys from ``old_verify_keys`` then never count.
        """
        want = {k for k in key_ids if k.startswith("ed25519:")}
        if not want:
            return {}
        local = self._local.get(server_name)
        if local is not None:
            return {
                k: v
                for k in want
                if (v := local.get(k)) is not None and v.valid_at(for_ts, allow_old=allow_old)
            }

        if not self._trusted(server_name):
            logger.info("KEYS [%s] not looked up: outside the trust domain", server_name)
            return {}

        generation = self._generations.get(server_name, 0)
        found, missing = await self._from_cache(server_name, want, for_ts, allow_old)
        if not missing:
            return found

        batch = self._batches.get(server_name)
        if batch is not None and batch.started:
            await self._wait(batch)
        if self._generations.get(server_name, 0) != generation:
            # A request to this server was answered while we looked (we may
            # have waited for it): asking again now would get the same answer.
            # What it did not give is remembered as missing for a while.
            found, missing = await self._from_cache(server_name, want, for_ts, allow_old)
            self._mark_missing(server_name, missing)
            return found

        if batch is None or batch.started:
            batch = _Batch(done=asyncio.get_running_loop().create_future())
            self._batches[server_name] = batch
            task = asyncio.create_task(self._run_batch(server_name, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.key_ids |= missing
        batch.minimum_valid_until_ts = max(batch.minimum_valid_until_ts, for_ts)
        await self._wait(batch)
        found, _ = await self._from_cache(server_name, want, for_ts, allow_old)
        return found

    def _mark_missing(self, server_name: str, key_ids: Iterable[str]) -> None:
        now = self._clock.time_ms()
        for k in key_ids:
            self._negative[(server_name, k)] = now + self._negative_ttl_ms
        # Forget stale negative entries so the dict cannot grow without bound.
        if len(self._negative) > 10_000:
            self._negative = {k: t for k, t in self._negative.items() if t > now}

    async def _wait(self, batch: _Batch) -> None:
        assert batch.done is not None
        # shield: one caller being cancelled must not cancel the shared request.
        await asyncio.shield(batch.done)

    async def _from_cache(
        self, server_name: str, want: set[str], for_ts: int, allow_old: bool
    ) -> tuple[dict[str, FetchedKey], set[str]]:
        found: dict[str, FetchedKey] = {}
        for k in want:
            hit = self._memory.get((server_name, k))
            if hit is not None and hit.valid_at(for_ts, allow_old=allow_old):
                found[k] = hit
        if len(found) < len(want):
            cached = await self._cache.get_server_keys(server_name, want - found.keys())
            self._remember(server_name, cached)
            found.update(
                (k, v) for k, v in cached.items()
                if k in want and v.valid_at(for_ts, allow_old=allow_old)
            )
        now = self._clock.time_ms()
        missing = set()
        for k in want - found.keys():
            until = self._negative.get((server_name, k))
            if until is not None and until > now:
                continue
            missing.add(k)
        return found, missing

    def _remember(self, server_name: str, keys: Mapping[str, FetchedKey]) -> None:
        if len(self._memory) > _MEMORY_MAX_KEYS:
            self._memory.clear()
        for k, v in keys.items():
            self._memory[(server_name, k)] = v

    async def _run_batch(self, server_name: str, batch: _Batch) -> None:
        # Callers that reached get_verify_keys in the same loop turn have
        # already added their key IDs: this task only starts after they yield.
        batch.started = True
        assert batch.done is not None
        try:
            await self._fetch_into_cache(
                server_name,
                set(batch.key_ids),
                batch.minimum_valid_until_ts,
                self._fetchers,
            )
        except Exception:  # a broken cache must not leave waiters hanging
            logger.exception("key lookup for %s failed", server_name)
        finally:
            self._generations[server_name] = self._generations.get(server_name, 0) + 1
            if self._batches.get(server_name) is batch:
                del self._batches[server_name]
            if not batch.done.done():
                batch.done.set_result(None)

    async def _fetch_into_cache(
        self,
        server_name: str,
        key_ids: set[str],
        minimum_valid_until_ts: int,
        fetchers: Sequence[KeyFetcher],
    ) -> set[str]:
        """Ask each fetcher in turn for what is still missing; returns what stays missing.

        An empty ``key_ids`` means "whatever the server has": the first
        fetcher that answers with current keys is enough.
        """
        remaining = set(key_ids)
        fetch_all = not remaining
        for fetcher in fetchers:
            notary = getattr(fetcher, "notary_name", None)
            if isinstance(notary, str) and not self._trusted(notary):
                logger.info("KEYS [%s] not asking %s: outside the trust domain",
                            server_name, fetcher.name)
                continue
            try:
                keys = await fetcher.fetch(server_name, remaining, minimum_valid_until_ts)
            except Exception as e:
                logger.info(
                    "KEYS [%s] %s fetch of %s failed: %s",
                    server_name,
                    fetcher.name,
                    sorted(remaining),
                    e,
                )
                continue
            usable = {k: v for k, v in keys.items() if v.server_name == server_name}
            if usable:
                await self._cache.store_server_keys(server_name, usable)
                self._remember(server_name, usable)
            remaining -= {k for k, v in usable.items() if v.valid_at(minimum_valid_until_ts)}
            if fetch_all and any(v.expired_ts is None for v in usable.values()):
                break
            if not remaining and not fetch_all:
                break
        self._mark_missing(server_name, remaining)
        return remaining

    # -- signature checks ----------------------------------------------------------

    async def verify_json_for_server(
        self,
        obj: Mapping[str, Any],
        server_name: str,
        for_ts: int,
        *,
        allow_old: bool = True,
    ) -> None:
        """Check ``obj``'s signatures by ``server_name`` as made at ``for_ts``.

        Appendices "Checking for a signature" and server-server "Validating
        hashes and signatures on received events": signatures by unknown or
        expired keys are skipped, every signature by a known key valid at
        ``for_ts`` must verify, and at least one must exist. Raises
        :class:`UnsignedError`, :class:`UnknownKeyError` or
        :class:`BadSignatureError`.
        """
        sigs = obj.get("signatures")
        by_server = sigs.get(server_name) if isinstance(sigs, Mapping) else None
        if not isinstance(by_server, Mapping) or not by_server:
            raise UnsignedError(f"not signed by {server_name}")
        key_ids = [k for k in by_server if isinstance(k, str) and k.startswith("ed25519:")]
        if not key_ids:
            raise UnknownKeyError(f"no ed25519 signature by {server_name}")
        keys = await self.get_verify_keys(server_name, key_ids, for_ts, allow_old=allow_old)
        if not keys:
            raise UnknownKeyError(
                f"no key of {server_name} valid at {for_ts} among {sorted(key_ids)}"
            )
        for key_id, fk in sorted(keys.items()):
            try:
                verify_json_signature(obj, server_name, fk.verify_key, key_id=key_id)
            except SignatureVerifyError as e:
                raise BadSignatureError(
                    f"signature by {server_name} {key_id} does not verify"
                ) from e

    async def verify_keys_for(
        self, server_names_to_key_ids: Mapping[str, Collection[str]], for_ts: int
    ) -> dict[str, dict[str, VerifyKey]]:
        """``{server: {key_id: VerifyKey}}`` for several servers at once.

        The shape signature checks over events want: fetch once, then verify
        purely. Lookups for different servers run concurrently.
        """
        names = list(server_names_to_key_ids)
        results = await asyncio.gather(
            *(self.get_verify_keys(n, server_names_to_key_ids[n], for_ts) for n in names)
        )
        return {
            n: {kid: fk.verify_key for kid, fk in res.items()}
            for n, res in zip(names, results, strict=True)
        }

    async def verify_pdu(self, pdu: Mapping[str, Any], rv: RoomVersion) -> VerifiedPdu:
        """Receipt checks 1-3 on a PDU (:func:`federation.signing.verify_pdu`)
        with the keys its required signers used, valid at its ``origin_server_ts``.

        Server-server "Validating hashes and signatures on received events"
        and v5-signing-requirements.md: a key counts only if its validity
        reaches the event's ``origin_server_ts``. For a third-party invite,
        which any server may vouch for, the keys of every signer are looked up.
        """
        sigs = pdu.get("signatures")
        sigs = sigs if isinstance(sigs, Mapping) else {}
        ts = pdu.get("origin_server_ts")
        for_ts = ts if type(ts) is int else 0
        signers = required_signers(pdu, rv) or {n for n in sigs if isinstance(n, str)}
        wanted = {
            name: [k for k in ids if isinstance(k, str)]
            for name in sorted(signers)[:_MAX_SIGNERS]
            if isinstance(ids := sigs.get(name), Mapping)
        }
        keys = await self.verify_keys_for(wanted, for_ts)
        return verify_pdu(pdu, rv, keys)

    # -- acting as a notary ----------------------------------------------------------

    async def get_responses_for_notary(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        """The signed key responses we would relay for ``server_name``.

        keys_query.yaml: the returned keys "SHOULD be valid until at least"
        ``minimum_valid_until_ts``; keys_server.yaml: notaries "should cache a
        response for half of its lifetime" and, if the origin does not
        answer, "continue to return the last response they received". So: use
        the cache while fresh enough, else ask the origin directly (never
        another notary), and fall back to what the cache has. Empty when
        nothing is known. The caller adds its own signature.
        """
        if not self._trusted(server_name):
            return []
        wanted = set(key_ids) or None
        now = self._clock.time_ms()
        cached = await self._cache.get_server_keys(server_name, wanted)
        if not self._fresh_for_notary(cached, minimum_valid_until_ts, now):
            direct = [f for f in self._fetchers if f.direct]
            await self._fetch_into_cache(server_name, set(key_ids), minimum_valid_until_ts, direct)
            cached = await self._cache.get_server_keys(server_name, wanted)
        # Newest response per key, each response once.
        newest: dict[str, FetchedKey] = {}
        for fk in cached.values():
            if fk.response_json is None:
                continue
            cur = newest.get(fk.key_id)
            if cur is None or fk.fetched_ts > cur.fetched_ts:
                newest[fk.key_id] = fk
        seen: set[bytes] = set()
        out: list[dict[str, Any]] = []
        for fk in sorted(newest.values(), key=lambda f: -f.fetched_ts):
            assert fk.response_json is not None
            blob = encode_canonical_json(fk.response_json)
            if blob in seen:
                continue
            seen.add(blob)
            out.append(dict(fk.response_json))
        return out

    @staticmethod
    def _fresh_for_notary(
        cached: Mapping[str, FetchedKey], minimum_valid_until_ts: int, now: int
    ) -> bool:
        current = [fk for fk in cached.values() if fk.expired_ts is None]
        if not current:
            return False
        for fk in current:
            if fk.valid_until_ts < minimum_valid_until_ts:
                return False
            half_life = fk.fetched_ts + (fk.valid_until_ts - fk.fetched_ts) // 2
            if now > half_life:
                return False
        return True

    async def close(self) -> None:
        """Wait for batches still running (shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# -- fetchers ----------------------------------------------------------------------


class DirectKeyFetcher:
    """Asks the origin: ``GET /_matrix/key/v2/server`` (keys_server.yaml).

    The response must be for exactly that server name (port included) and
    self-signed by every key it lists.
    """

    name = "direct"
    direct = True

    def __init__(self, client: KeyHttpClient, clock: Clock, *, timeout: float = 10.0) -> None:
        self._client = client
        self._clock = clock
        self._timeout = timeout

    async def fetch(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> dict[str, FetchedKey]:
        body = await self._client.get_json(
            server_name, "/_matrix/key/v2/server", timeout_s=self._timeout
        )
        parsed = parse_server_key_response(body, server_name)
        return parsed.to_fetched_keys(self._clock.time_ms())


@dataclass(frozen=True)
class NotarySpec:
    """A trusted key server from config, with the verify keys we pin for it."""

    server_name: str
    verify_keys: Mapping[str, VerifyKey]


class NotaryKeyFetcher:
    """Asks a trusted notary: ``POST /_matrix/key/v2/query`` (keys_query.yaml).

    Each returned response must carry a valid signature by one of the
    notary's pinned keys *and* the origin's own valid self-signature; a
    response failing either is dropped, so a lying notary gains nothing.
    """

    direct = False

    def __init__(
        self,
        client: KeyHttpClient,
        clock: Clock,
        notary: NotarySpec,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._notary = notary
        self._timeout = timeout
        self.name = f"notary {notary.server_name}"
        #: The notary asked (the keyring skips one outside the trust domain).
        self.notary_name = notary.server_name

    async def fetch(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> dict[str, FetchedKey]:
        criteria = {"minimum_valid_until_ts": minimum_valid_until_ts}
        query = {"server_keys": {server_name: {k: criteria for k in key_ids if k != "*"}}}
        body = await self._client.post_json(
            self._notary.server_name,
            "/_matrix/key/v2/query",
            query,
            timeout_s=self._timeout,
        )
        if not isinstance(body, dict) or not isinstance(body.get("server_keys"), list):
            raise KeyLookupError(f"{self.name}: response has no server_keys list")
        now = self._clock.time_ms()
        out: dict[str, FetchedKey] = {}
        for entry in body["server_keys"]:
            if not isinstance(entry, dict) or entry.get("server_name") != server_name:
                continue  # not what we asked about: never cache keys for another name
            try:
                verify_notary_signature(entry, self._notary.server_name, self._notary.verify_keys)
                parsed = parse_server_key_response(entry, server_name)
            except KeyLookupError as e:
                logger.warning("KEYS [%s] %s: ignoring response: %s", server_name, self.name, e)
                continue
            for kid, fk in parsed.to_fetched_keys(now).items():
                cur = out.get(kid)
                if cur is None or (cur.expired_ts is not None and fk.expired_ts is None):
                    out[kid] = fk
        return out


def notary_query_path(server_name: str) -> str:
    """``GET /_matrix/key/v2/query/{serverName}`` path for ``server_name``."""
    return "/_matrix/key/v2/query/" + quote(server_name, safe="")
