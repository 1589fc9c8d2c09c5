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


    def test_federated_room_over_treq(self) -> Deferred[None]:
        """A room made on A, joined from B through A, a message each way, both
        servers converge; with a partition healed through the Deferred helpers."""

        async def check() -> None:
            a, b = self.fed.nodes
            alice = await self.register_user(a, "alice")
            bob = await self.register_user(b, "bob")
            room_id = await alice.create_room(preset="public_chat")
            self.assertEqual(await bob.join(room_id, [a.server_name]), room_id)
            await bob.send_message(room_id, "hi from B")
            await self.partition(a, b)
            await alice.send_message(room_id, "hi from A, held")
            await self.heal(a, b)
            snaps = await self.converged(room_id, timeout=30)
            self.assertEqual({s.server for s in snaps}, {a.server_name, b.server_name})
            for snap in snaps:
                shown = {ev["content"].get("body") for ev in snap.events.values()
                         if ev["type"] == "m.room.message"}
                self.assertEqual(shown, {"hi from B", "hi from A, held"})

        return ensureDeferred(check())

    def test_key_rotation_and_clock_skew(self) -> Deferred[None]:
        async def check() -> None:
            a, b = self.fed.nodes
            assert a.hs is not None and b.hs is not None
            before = a.hs.clock.time_ms()
            await self.skew_clock(a, 3600)
            self.assertGreaterEqual(a.hs.clock.time_ms() - before, 3_600_000)
            await self.skew_clock(a, 0)
            key_id = await self.rotate_signing_key(a)
            keys = await as_deferred(
                b.hs.keys.client.get_json(a.server_name, "/_matrix/key/v2/server")
            )
            self.assertIn(key_id, keys["verify_keys"])

        return ensureDeferred(check())


class TwoTenantsPerNode(FederationTestCase):
    nodes = 2
    tenants_per_node = 2

    def test_users_of_every_tenant(self) -> Deferred[None]:
        """Registration and every call carry the tenant's Host: a user of the
        second tenant of A and one of B's primary name share a room."""

        async def check() -> None:
            a, b = self.fed.nodes
            self.assertEqual(len(a.tenants), 2)
            alice = await self.register_user(a, "alice")
            self.assertEqual(alice.user_id, f"@alice:{a.server_name}")
            tina = await self.register_user(a, "tina", tenant=a.tenants[1])
            self.assertEqual(tina.user_id, f"@tina:{a.tenants[1]}")
            bob = await self.register_user(b, "bob")
            room_id = await self.create_room(tina, bob, alice)
            await bob.send_message(room_id, "hello second tenant")
            snaps = await self.converged(room_id, timeout=30, servers=[a, b])
            self.assertEqual({s.server for s in snaps},
                             {a.server_name, a.tenants[1], b.server_name})
            with self.assertRaises(ValueError):
                self.register_user(a, "x", tenant="elsewhere.test")

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
