"""Outbound federation: the outbox, one sender per destination, retries.

Spec: ``server-server-api.md`` "Transactions", "PDUs", "EDUs". See
:mod:`.outbox` (rows written with the event), :mod:`.sender` (the queues)
and :mod:`.backoff`. Delivery guarantees (dead letters, replay, the
operator's view) are in :mod:`.admin` and docs/usage/delivery.md.
"""

from homeserver.federation_sender.backoff import BackoffPolicy, DeliveryLimits
from homeserver.federation_sender.outbox import OutboxWriter, joined_servers_txn
from homeserver.federation_sender.sender import FederationSender

__all__ = ["BackoffPolicy", "DeliveryLimits", "FederationSender", "OutboxWriter", "joined_servers_txn"]
