"""Trial face: a HomeServer on the asyncio reactor's loop, fetched with treq.

Run by ``trial --reactor=asyncio tests.trial`` (``make test``). Twisted lives
only here and in the harness; the server itself never imports it.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import treq
from signedjson.key import generate_signing_key, write_signing_keys
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from homeserver.config import parse_config
from homeserver.server import HomeServer


def as_deferred(coro: Any) -> Deferred[Any]:
    return Deferred.fromFuture(asyncio.ensure_future(coro))


class SmokeTest(unittest.TestCase):
    def setUp(self) -> Deferred[Any]:
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        d = Path(self._tmp.name)
        buf = io.StringIO()
        write_signing_keys(buf, [generate_signing_key("trial")])
        (d / "signing.key").write_text(buf.getvalue())
        config = parse_config(
            {
                "server_name": "trial.test",
                "database": {"url": f"sqlite://{d / 'hs.db'}"},
                "listeners": [{"type": "client", "port": 0}],
            },
            base_dir=str(d),
            env={},
        )

        self.pool = HTTPConnectionPool(reactor, persistent=False)

        async def start() -> None:
            self.hs = await HomeServer.start(config)

        return as_deferred(start())

    def tearDown(self) -> Deferred[Any]:
        # Close our client connections first, or trial reports a dirty reactor.
        d = self.pool.closeCachedConnections()
        d.addCallback(lambda _: as_deferred(self.hs.stop()))
        return d

    def test_health_and_versions(self) -> Deferred[None]:
        async def check() -> None:
            base = self.hs.base_url("client")
            response = await treq.get(base + "/health", pool=self.pool)
            self.assertEqual(response.code, 200)
            self.assertEqual(await treq.text_content(response), "OK")
            response = await treq.get(base + "/_matrix/client/versions", pool=self.pool)
            self.assertEqual(response.code, 200)
            body = json.loads(await treq.content(response))
            self.assertIn("v1.12", body["versions"])
            self.assertEqual(body["unstable_features"], {})

        return ensureDeferred(check())
