"""Outbound federation: the outbox, one sender per destination, retries.

Spec: ``server-server-api.md`` "Transactions", "PDUs", "EDUs". See
:mod:`.outbox` (rows written with the event), :mod:`.sender` (the queues)
and :mod:`.backoff`. Delivery guarantees beyond a simple retry (dead
letters, admin API) are issue 7 and build on these tables.
"""

from homeserver.federation_sender.backoff import BackoffPolicy
from homeserver.federation_sender.outbox import OutboxWriter, joined_servers_txn
from homeserver.federation_sender.sender import FederationSender

__all__ = ["BackoffPolicy", "FederationSender", "OutboxWriter", "joined_servers_txn"]
