"""Example trial tests on FederationTestCase: real Concord nodes, treq clients,
Deferreds throughout. Run: python -m twisted.trial --reactor=asyncio tests.trial"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import Deferred, ensureDeferred

from concord_harness.trial import FederationTestCase, MatrixTrialError, as_deferred


class TwoNodes(FederationTestCase):
    nodes = 2

    def test_nodes_answer(self) -> Deferred[None]:
        async def check() -> None:
            for node in self.fed.nodes:
                response = await treq.get(node.client_url + "/health", pool=self.pool)
                self.assertEqual(response.code, 200)
                self.assertEqual(await treq.text_content(response), "OK")

        return ensureDeferred(check())

    def test_room_on_one_node(self) -> Deferred[None]:
        async def check() -> None:
            a = self.fed.nodes[0]
            alice = await self.register_user(a, "alice")
            self.assertEqual(alice.user_id, f"@alice:{a.server_name}")
            room_id = await self.create_room(alice, name="trial")
            event_id = await alice.send_message(room_id, "hello from trial")
            events = await alice.all_events(room_id)
            self.assertEqual(events[-1]["event_id"], event_id)
            self.assertEqual(events[-1]["content"]["body"], "hello from trial")
            # One server that can read the room: converged compares it with itself.
            await self.converged(room_id, timeout=5, servers=[a])

        return ensureDeferred(check())

    def test_client_errors_are_matrix_errors(self) -> Deferred[None]:
        async def check() -> None:
            alice = await self.register_user(self.fed.nodes[0], "alice")
            try:
                await alice.send_message("!nope:" + self.fed.nodes[0].server_name, "x")
            except MatrixTrialError as e:
                self.assertIn(e.status, (403, 404))
                self.assertIsNotNone(e.errcode)
            else:
                self.fail("sending to an unknown room succeeded")

        return ensureDeferred(check())

    def test_partition_and_heal(self) -> Deferred[None]:
        a, b = self.fed.nodes

        def fetch() -> Deferred[Any]:
            assert a.hs is not None
            return as_deferred(a.hs.keys.client.get_json(b.server_name, "/_matrix/key/v2/server"))

        async def check() -> None:
            self.fed.partition(a, b)
            try:
                await fetch()
            except Exception:
                pass
            else:
                self.fail("a partitioned link answered")
            self.assertGreaterEqual(self.fed.link(a, b).stats["partitioned"], 1)
            self.fed.heal()
            body = await fetch()
            self.assertEqual(body["server_name"], b.server_name)

        return ensureDeferred(check())


class SubprocessNode(FederationTestCase):
    nodes = 1
    mode = "subprocess"
    engine = "postgres"

    def test_kill_and_restart(self) -> Deferred[None]:
        async def check() -> None:
            node = self.fed.nodes[0]
            await self.kill(node)
            self.assertFalse(node.running)
            await self.restart(node)
            response = await treq.get(node.client_url + "/health", pool=self.pool)
            self.assertEqual(response.code, 200)
            await treq.content(response)

        return ensureDeferred(check())
