"""Cross-cluster room discovery (docs/usage/room_discovery.md).

- :mod:`.directory`: a tenant's published room directory as federation
  ``publicRooms`` serves it (stable keyset tokens);
- :mod:`.health`: peer health from probe results (pure);
- :mod:`.service`: :class:`~.service.Discovery`, the node's crawler, prober
  and search, built by :func:`~.service.discovery_for`.
"""
