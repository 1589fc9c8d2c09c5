"""Re-reading the config file on SIGHUP (``homeserver run`` installs the handler).

Docs: docs/usage/trust_domain.md and docs/usage/key_rotation.md. What a
reload applies at once: the trust domain (``federation.trusted_servers`` and
``tenants[].trusted_servers``) and the signing keys (rotated or revoked with
``homeserver keys``). Every other setting keeps its start-up value; a
changed one is logged as needing a restart. An invalid file changes nothing
(its problems are logged).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from homeserver.config import ConfigError, HomeserverConfig, load_config

__all__ = ["reload_config", "restart_only_changes"]

logger = logging.getLogger("homeserver.reload")

_RELOADED = {"federation.trusted_servers", "tenants"}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(getattr(value, f.name), f"{prefix}{f.name}" if not prefix else
                     f"{prefix}.{f.name}", out)
    else:
        out[prefix] = value


def restart_only_changes(old: HomeserverConfig, new: HomeserverConfig) -> list[str]:
    """Options that differ but only take effect at the next start."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    changed = []
    for key in sorted(set(a) | set(b)):
        if key in _RELOADED or a.get(key) == b.get(key):
            continue
        changed.append(key)
    old_tenants = [dataclasses.replace(t, trusted_servers=None) for t in old.tenants]
    new_tenants = [dataclasses.replace(t, trusted_servers=None) for t in new.tenants]
    if old_tenants != new_tenants:
        changed.append("tenants")
    return changed


async def reload_config(hs: Any, path: str) -> list[str]:
    """Apply what can change at run time from the file at ``path``; returns the
    applied changes (also logged)."""
    logger.info("SIGHUP: re-reading %s", path)
    try:
        new = load_config(path)
    except ConfigError as e:
        logger.error("Config not reloaded, nothing changed: %s", e)
        return []
    applied: list[str] = []
    if hs.trust is not None:
        applied += hs.trust.apply_config(new)
    for option in restart_only_changes(hs.config, new):
        logger.warning("%s changed in %s: it takes effect at the next restart", option, path)
    keys = getattr(hs, "keys", None)
    if keys is not None:
        for name in await keys.refresh_local():
            applied.append(f"signing keys of {name}")
    if not applied:
        logger.info("SIGHUP: nothing to apply")
    return applied
