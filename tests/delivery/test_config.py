"""The delivery bounds: parsed, checked, and what the node's sender uses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from homeserver.config import ConfigError, parse_config
from homeserver.federation_sender import FederationSender
from homeserver.server import HomeServer


def raw(tmp_path: Path, **federation: Any) -> dict[str, Any]:
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("k1")])
    (tmp_path / "signing.key").write_text(buf.getvalue())
    return {
        "server_name": "a.test", "data_dir": str(tmp_path),
        "signing_key_path": str(tmp_path / "signing.key"),
        "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]}],
        "federation": {"trusted_key_servers": [], **federation},
    }


def test_defaults(tmp_path: Path) -> None:
    fed = parse_config(raw(tmp_path), base_dir=str(tmp_path)).federation
    assert (fed.retry_min_interval, fed.retry_max_interval) == (10_000, 86_400_000)
    assert (fed.max_delivery_attempts, fed.max_delivery_age) == (20, 7 * 86_400_000)
    assert fed.inbound_transaction_window == 86_400_000


def test_bad_bounds_are_refused_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(raw(tmp_path, retry_min_interval="1h", retry_max_interval="10m"),
                     base_dir=str(tmp_path))
    assert any(p.startswith("federation.retry_max_interval: must be at least")
               for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        parse_config(raw(tmp_path, inbound_transaction_window="1h", max_delivery_attempts=0),
                     base_dir=str(tmp_path))
    assert any(p.startswith("federation.inbound_transaction_window: must be at least")
               for p in e.value.problems)
    assert any(p.startswith("federation.max_delivery_attempts: must be at least 1")
               for p in e.value.problems)


async def test_the_node_sender_uses_them(tmp_path: Path) -> None:
    cfg = parse_config(raw(tmp_path, retry_min_interval="30s", retry_max_interval="2h",
                           max_delivery_attempts=5, max_delivery_age="3d"),
                       base_dir=str(tmp_path))
    hs = await HomeServer.start(cfg, clock=FakeClock())
    try:
        sender = hs.federation_sender  # type: ignore[attr-defined]
        assert isinstance(sender, FederationSender)
        assert (sender.policy.min_interval_ms, sender.policy.max_interval_ms) == (
            30_000, 7_200_000)
        assert (sender.limits.max_attempts, sender.limits.max_age_ms) == (5, 3 * 86_400_000)
        assert sender.metrics is hs.metrics.federation
    finally:
        await hs.stop()
