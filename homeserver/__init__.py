"""Concord, a federated Matrix homeserver: the application (config, tenants,
users, room handlers, client API, admin API, CLI)."""

__version__ = "0.1.0"
