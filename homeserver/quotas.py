"""Per-tenant quotas: users, rooms, events per minute.

Issue "Client-server API and tenants", Tenants: when a quota is exceeded the
request fails with 403 ``M_RESOURCE_LIMIT_EXCEEDED`` naming the limit, and
nothing is stored. The spec requires an ``admin_contact`` on that error
(Client-Server API, "Common error codes"); it comes from the tenant's
``quotas.admin_contact`` or defaults to ``mailto:admin@<server name>``.

Who calls what (before writing anything):

* ``await quotas.check_can_register(tenant)``: registration (this module's
  owner; the store also re-checks under a lock, so racing registrations
  cannot overshoot).
* ``await quotas.check_can_create_room(tenant, txn)``: ``POST /createRoom``,
  inside the room's creation transaction under its ``rooms:<tenant>`` lock, so
  racing creations cannot overshoot.
* ``quotas.check_event_rate(tenant)``: every event a local user sends
  (``/send``, ``/state``, membership changes, redactions), once per event,
  before it is persisted. It takes one token from the tenant's bucket, so
  call it only for events about to be stored.

The node's instance is ``hs.quotas``.
"""

from __future__ import annotations

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.ratelimit import Ratelimiter
from homeserver.tenants import Tenant
from storage.database import Transaction

__all__ = ["QuotaEnforcer", "resource_limit_error"]


def resource_limit_error(tenant: Tenant, limit_type: str, msg: str) -> MatrixError:
    contact = tenant.quotas.admin_contact or f"mailto:admin@{tenant.server_name}"
    return MatrixError(
        403,
        Codes.RESOURCE_LIMIT_EXCEEDED,
        msg,
        extra={"admin_contact": contact, "limit_type": limit_type},
    )


class QuotaEnforcer:
    """Checks a tenant's quotas. Event-rate buckets are per tenant, created on
    the first event (an idle tenant has none)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event_buckets: dict[str, tuple[int, Ratelimiter]] = {}

    async def check_can_register(self, tenant: Tenant) -> None:
        limit = tenant.quotas.max_users
        if limit is None:
            return
        store = await tenant.user_store()
        if await store.count_users() >= limit:
            raise self.users_exceeded(tenant)

    @staticmethod
    def users_exceeded(tenant: Tenant) -> MatrixError:
        return resource_limit_error(
            tenant,
            "max_users",
            f"{tenant.server_name} has reached its limit of {tenant.quotas.max_users} users",
        )

    async def check_can_create_room(self, tenant: Tenant, txn: Transaction | None = None) -> None:
        """Refuse a room over ``max_rooms``. With ``txn`` (the room creation's
        own transaction, holding its ``rooms:<tenant>`` lock) the count and
        the creation are one atomic step, so racing requests cannot overshoot."""
        limit = tenant.quotas.max_rooms
        if limit is None:
            return
        store = await tenant.user_store()
        if await store.count_created_rooms(txn) >= limit:
            raise resource_limit_error(
                tenant,
                "max_rooms",
                f"{tenant.server_name} has reached its limit of {limit} rooms",
            )

    def check_event_rate(self, tenant: Tenant) -> None:
        limit = tenant.quotas.max_events_per_minute
        if limit is None:
            return
        entry = self._event_buckets.get(tenant.server_name)
        if entry is None or entry[0] != limit:
            entry = (limit, Ratelimiter(self._clock, per_second=limit / 60.0, burst=limit))
            self._event_buckets[tenant.server_name] = entry
        try:
            entry[1].check(tenant.server_name, what="events")
        except MatrixError as e:
            err = resource_limit_error(
                tenant,
                "max_events_per_minute",
                f"{tenant.server_name} has reached its limit of {limit} events per minute",
            )
            err.extra["retry_after_ms"] = e.extra["retry_after_ms"]
            raise err from None
