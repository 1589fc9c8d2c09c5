"""The node's trust domain: who each hosted name federates with, kept current.

Docs: docs/usage/trust_domain.md. The decisions are
:class:`federation.trust.TrustPolicy`'s; this module picks the policy that
applies to each hosted name and enforces it at the node's edges:

- inbound: :mod:`homeserver.http.trust` refuses requests from servers
  outside the addressed tenant's domain (403 ``M_FORBIDDEN``) before the
  body is read or any key fetched; PDUs in a ``/send`` whose sender's
  server is outside it get a per-PDU error (:meth:`TrustDomain.pdu_refusal`);
- outbound: the federation client refuses to send anything to a server
  outside the requesting name's domain (:class:`UntrustedDestinationError`,
  a 403 that never touches the network), so joins via, invites to and
  queries of such servers fail at once; PDUs the outbox holds for them go
  to the dead letters with reason ``untrusted``, unsent, and EDUs are not
  queued for them (:meth:`TrustDomain.filter_destinations`);
- keys: the keyring never fetches keys of a server outside every hosted
  name's domain, and never asks a notary outside it.

Which policy applies to a hosted name, first match wins:

1. a run-time override for the name (admin API, table
   ``trusted_servers_overrides``);
2. its ``tenants[].trusted_servers`` in the config;
3. the node-wide setting: the run-time override for the node, else
   ``federation.trusted_servers`` (unset: open federation).

Run-time overrides persist across restarts and win over the config until
removed with ``DELETE``. SIGHUP re-reads the config (:meth:`apply_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from federation.clock import Clock
from federation.transport.client import FederationHttpError
from federation.trust import TrustPolicy
from homeserver.config import HomeserverConfig
from storage.database import Database
from storage.stores.trust import NODE_SCOPE, TrustOverride, TrustOverrideStore

__all__ = ["TrustDomain", "UntrustedDestinationError", "KEY_PATH_PREFIX"]

logger = logging.getLogger(__name__)

KEY_PATH_PREFIX = "/_matrix/key/"

NODE_SOURCE = "federation.trusted_servers"


class UntrustedDestinationError(FederationHttpError):
    """We refused to send a request to a server outside the trust domain.

    A 403 ``M_FORBIDDEN`` made locally: callers that map peer errors (remote
    joins, invites, queries) report it like a peer's refusal; nothing went
    over the network.
    """

    #: The sender moves what it could not send to the dead letters with this reason.
    dead_letter_reason = "untrusted"

    def __init__(self, destination: str, message: str) -> None:
        super().__init__(destination, 403, {"errcode": "M_FORBIDDEN", "error": message})


def _config_tenant_patterns(config: HomeserverConfig) -> dict[str, tuple[str, ...]]:
    return {
        t.server_name: t.trusted_servers for t in config.tenants if t.trusted_servers is not None
    }


class TrustDomain:
    """The policies in force, per hosted name; cheap to ask (dict lookups)."""

    def __init__(
        self,
        *,
        config: HomeserverConfig,
        store: TrustOverrideStore,
        clock: Clock,
        overrides: Mapping[str, TrustOverride] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._node_config: tuple[str, ...] | None = config.federation.trusted_servers
        self._tenant_config = _config_tenant_patterns(config)
        self._overrides: dict[str, TrustOverride] = dict(overrides or {})
        self._node = TrustPolicy(None)
        self._tenants: dict[str, TrustPolicy] = {}
        self._rebuild()

    @classmethod
    async def load(
        cls, *, config: HomeserverConfig, database: Database, clock: Clock
    ) -> TrustDomain:
        store = TrustOverrideStore(database)
        domain = cls(config=config, store=store, clock=clock, overrides=await store.get_all())
        domain.log_state("Trust domain")
        return domain

    # -- the policies ------------------------------------------------------------

    def _rebuild(self) -> None:
        node_override = self._overrides.get(NODE_SCOPE)
        if node_override is not None:
            node = TrustPolicy.from_patterns(
                node_override.patterns, f"{NODE_SOURCE} (set through the admin API)"
            )
        else:
            node = TrustPolicy.from_patterns(self._node_config, NODE_SOURCE)
        tenants: dict[str, TrustPolicy] = {}
        for name, patterns in self._tenant_config.items():
            tenants[name] = TrustPolicy.from_patterns(patterns, f"tenants[{name}].trusted_servers")
        for scope, o in self._overrides.items():
            if scope == NODE_SCOPE:
                continue
            if o.patterns is None:
                tenants.pop(scope, None)  # explicitly back to the node-wide setting
            else:
                tenants[scope] = TrustPolicy.from_patterns(
                    o.patterns, f"trusted servers of {scope} (set through the admin API)"
                )
        self._node = node
        self._tenants = tenants

    @property
    def node_policy(self) -> TrustPolicy:
        return self._node

    def policy_for(self, local_name: str) -> TrustPolicy:
        """The policy of one hosted name (the node-wide one unless it has its own)."""
        return self._tenants.get(local_name, self._node)

    def allows(self, local_name: str, server_name: str) -> bool:
        return self.policy_for(local_name).allows(server_name)

    def refusal(self, local_name: str, server_name: str) -> str | None:
        """Why ``local_name`` does not federate with ``server_name``; None if it does."""
        policy = self.policy_for(local_name)
        if policy.allows(server_name):
            return None
        return (
            f"{server_name} is not in the trust domain of {local_name}: "
            f"{policy.reason(server_name)}"
        )

    def allows_any(self, server_name: str) -> bool:
        """Whether some hosted name federates with ``server_name`` (key fetches)."""
        if self._node.allows(server_name):
            return True
        return any(p.allows(server_name) for p in self._tenants.values())

    # -- enforcement hooks ---------------------------------------------------------

    def check_destination(self, origin: str, destination: str, path: str) -> None:
        """The federation client's guard: raise instead of sending."""
        if path.startswith(KEY_PATH_PREFIX):
            # Key requests serve every hosted name (the keyring is shared).
            if self.allows_any(destination):
                return
            msg = f"{destination} is in the trust domain of no server name hosted here"
        else:
            refused = self.refusal(origin, destination)
            if refused is None:
                return
            msg = refused
        logger.info("Not sending %s to %s: %s", path.split("?", 1)[0], destination, msg)
        raise UntrustedDestinationError(destination, msg)

    def filter_destinations(self, origin: str, destinations: Collection[str]) -> set[str]:
        """The destinations ``origin`` may send to; the others are logged."""
        allowed = set()
        for d in destinations:
            refused = self.refusal(origin, d)
            if refused is None:
                allowed.add(d)
            else:
                logger.info("TX [%s] EDU from %s not queued (untrusted): %s", d, origin, refused)
        return allowed

    def pdu_refusal(self, local_name: str, pdu: Mapping[str, Any]) -> str | None:
        """Per-PDU check on ``/send``: the event's sender's server must be trusted."""
        sender = pdu.get("sender")
        if not isinstance(sender, str) or ":" not in sender:
            return None  # malformed: the format checks refuse it with their own reason
        return self.refusal(local_name, sender.split(":", 1)[1])

    # -- changes ---------------------------------------------------------------------

    def describe(self, scope: str) -> dict[str, Any]:
        """What the admin API shows for ``scope`` (``""``: node-wide)."""
        override = self._overrides.get(scope)
        if scope == NODE_SCOPE:
            policy = self._node
            config_value = self._node_config
        else:
            policy = self.policy_for(scope)
            config_value = self._tenant_config.get(scope)
        return {
            "trusted_servers": policy.texts,
            "source": policy.source,
            "override": None
            if override is None
            else {
                "trusted_servers": None if override.patterns is None else list(override.patterns),
                "updated_ts": override.updated_ts,
            },
            "config": None if config_value is None else list(config_value),
        }

    async def set_override(self, scope: str, patterns: Iterable[str] | None) -> None:
        """Persist and apply a run-time setting; raises TrustPatternError first."""
        value = None if patterns is None else tuple(patterns)
        TrustPolicy.from_patterns(value)  # validate before storing anything
        now = self._clock.time_ms()
        await self._store.set(scope, value, now)
        self._overrides[scope] = TrustOverride(scope, value, now)
        self._rebuild()
        self.log_state(f"Trust domain of {scope or 'the node'} set through the admin API")

    async def clear_override(self, scope: str) -> bool:
        """Drop a run-time setting (back to the config); False if there was none."""
        removed = await self._store.delete(scope)
        self._overrides.pop(scope, None)
        self._rebuild()
        if removed:
            self.log_state(f"Run-time trust domain of {scope or 'the node'} removed")
        return removed

    def apply_config(self, config: HomeserverConfig) -> list[str]:
        """Take the trust settings of a re-read config (SIGHUP); returns what changed.

        A scope with a run-time override keeps it (the change is logged as
        shadowed) until the override is removed.
        """
        changes: list[str] = []
        new_node = config.federation.trusted_servers
        if new_node != self._node_config:
            changes.append(f"federation.trusted_servers: {_show(self._node_config)} -> "
                           f"{_show(new_node)}")
        new_tenants = _config_tenant_patterns(config)
        for name in sorted(set(new_tenants) | set(self._tenant_config)):
            before, after = self._tenant_config.get(name), new_tenants.get(name)
            if before != after:
                changes.append(f"tenants[{name}].trusted_servers: {_show(before)} -> "
                               f"{_show(after)}")
        self._node_config = new_node
        self._tenant_config = new_tenants
        self._rebuild()
        for change in changes:
            logger.info("Reloaded %s", change)
        for scope in self._overrides if changes else ():
            logger.warning(
                "The trust domain of %s is set through the admin API and stays in force "
                "over the config (DELETE it to use the config)", scope or "the node",
            )
        return changes

    def log_state(self, what: str) -> None:
        logger.info("%s: node-wide %s (%s)%s", what, _show(self._node.texts), self._node.source,
                    "".join(f"; {n}: {_show(p.texts)}" for n, p in sorted(self._tenants.items())))

    # -- wiring ------------------------------------------------------------------------

    def keyring_filter(self) -> Callable[[str], bool]:
        return self.allows_any


def _show(patterns: Iterable[str] | None) -> str:
    return "open federation" if patterns is None else "[" + ", ".join(patterns) + "]"


async def install_trust(hs: Any) -> TrustDomain:
    """Build the node's trust domain and hook it into the federation client
    and the keyring (call before anything is sent); sets ``hs.trust``."""
    trust = await TrustDomain.load(config=hs.config, database=hs.database, clock=hs.clock)
    keys = hs.keys
    keys.client.destination_guard = trust.check_destination
    keys.keyring.server_filter = trust.allows_any
    hs.trust = trust
    return trust


def attach_sender(trust: TrustDomain, sender: Any) -> None:
    """EDUs are not queued for servers outside the domain; PDUs queued for
    them are dead-lettered ``untrusted`` by the sender, never sent."""
    if sender is not None:
        sender.destination_filter = trust.filter_destinations
