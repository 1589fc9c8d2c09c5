"""Sending, idempotency, size limits, redaction, state, /messages and /context."""

from __future__ import annotations

from tests.client.conftest import Node


async def test_txn_idempotent_per_token(node: Node) -> None:
    alice = await node.user("alice")
    room = await alice.create_room()
    path = f"/rooms/{room}/send/m.room.message/t1"
    first = await alice.ok("PUT", path, {"body": "once"})
    events = await node.count("events")
    again = await alice.ok("PUT", path, {"body": "once"})
    assert again == first and await node.count("events") == events
    # Another access token (another device) with the same txnId sends anew.
    store = await node.hs.tenants.primary.user_store()
    await store.login(alice.user_id, "OTHER", "second-token", now_ms=node.clock.time_ms())
    other = await alice.ok("PUT", path, {"body": "once"}, token="second-token")
    assert other["event_id"] != first["event_id"]
    # The sender's own device sees its transaction ID; the other device does not.
    mine = await alice.ok("GET", f"/rooms/{room}/event/{first['event_id']}")
    assert mine["unsigned"]["transaction_id"] == "t1"
    theirs = await alice.ok("GET", f"/rooms/{room}/event/{first['event_id']}",
                            token="second-token")
    assert "transaction_id" not in theirs["unsigned"]


async def test_bad_input_changes_nothing(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room()
    before = await node.count("events")

    async def expect(status: int, errcode: str, method: str, path: str, body: object = None,
                     **kw: object) -> None:
        got = await alice.call(method, path, body, **kw)  # type: ignore[arg-type]
        assert (got[0], got[1]["errcode"]) == (status, errcode), (method, path, got)

    big = {"body": "x" * 70_000}
    await expect(413, "M_TOO_LARGE", "PUT", f"/rooms/{room}/send/m.room.message/big", big)
    # Content that fits alone but not once wrapped in the event.
    near = {"body": "x" * 65_400}
    await expect(413, "M_TOO_LARGE", "PUT", f"/rooms/{room}/send/m.room.message/near", near)
    await expect(413, "M_TOO_LARGE", "PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "y" * 66_000})
    await expect(400, "M_NOT_JSON", "PUT", f"/rooms/{room}/send/m.room.message/nj", raw=b"{not json")
    await expect(400, "M_BAD_JSON", "PUT", f"/rooms/{room}/send/m.room.message/arr", [1, 2])
    await expect(400, "M_INVALID_PARAM", "PUT", "/rooms/not-a-room/send/m.room.message/x", {})
    await expect(403, "M_FORBIDDEN", "PUT", "/rooms/!unknown:hs.test/send/m.room.message/x", {})
    await expect(400, "M_INVALID_PARAM", "GET", f"/rooms/{room}/event/no-dollar")
    await expect(404, "M_NOT_FOUND", "GET", f"/rooms/{room}/event/$unknown")
    await expect(400, "M_MISSING_PARAM", "POST", f"/rooms/{room}/invite", {})
    await expect(400, "M_INVALID_PARAM", "POST", f"/rooms/{room}/invite", {"user_id": 5})
    await expect(400, "M_INVALID_PARAM", "POST", f"/rooms/{room}/invite", {"user_id": "bob"})
    await expect(400, "M_INVALID_PARAM", "POST", f"/rooms/{room}/kick",
                 {"user_id": bob.user_id, "reason": 7})
    await expect(400, "M_INVALID_PARAM", "POST", "/createRoom", {"preset": "nope"})
    await expect(400, "M_INVALID_PARAM", "POST", "/createRoom", {"visibility": "secret"})
    await expect(400, "M_UNSUPPORTED_ROOM_VERSION", "POST", "/createRoom", {"room_version": "9"})
    await expect(400, "M_BAD_JSON", "POST", "/createRoom", {"room_version": 11})
    await expect(400, "M_INVALID_PARAM", "POST", "/createRoom", {"invite": "bob"})
    await expect(400, "M_INVALID_PARAM", "POST", "/createRoom", {"initial_state": [{"type": 1}]})
    await expect(400, "M_INVALID_PARAM", "POST", "/createRoom", {"room_alias_name": "a:b"})
    # A power-levels override the auth rules refuse leaves no room behind.
    await expect(403, "M_FORBIDDEN", "POST", "/createRoom",
                 {"room_version": "10", "power_level_content_override": {"users": {}}})
    await expect(400, "M_INVALID_PARAM", "GET", f"/rooms/{room}/messages", params={"dir": "x"})
    await expect(400, "M_INVALID_PARAM", "GET", f"/rooms/{room}/messages", params={"from": "zz"})
    await expect(400, "M_INVALID_PARAM", "GET", "/sync", params={"timeout": "soon"})
    await expect(400, "M_INVALID_PARAM", "GET", "/sync", params={"since": "garbage"})
    await expect(400, "M_INVALID_PARAM", "PUT", "/directory/room/nohash", {"room_id": room})
    await expect(400, "M_MISSING_PARAM", "PUT", "/directory/room/%23a:hs.test", {})
    await expect(404, "M_NOT_FOUND", "GET", "/directory/room/%23nothing:hs.test")
    await expect(400, "M_INVALID_PARAM", "POST", f"/rooms/{room}/receipt/m.nope/$x")
    await expect(400, "M_BAD_JSON", "PUT", f"/rooms/{room}/typing/{alice.user_id}", {"typing": "yes"})
    await expect(403, "M_FORBIDDEN", "PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True})
    await expect(400, "M_INVALID_PARAM", "PUT", f"/profile/{alice.user_id}/displayname", {"displayname": 3})
    await expect(403, "M_FORBIDDEN", "PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "x"})
    await expect(401, "M_UNKNOWN_TOKEN", "GET", "/joined_rooms", token="wrong")
    assert await node.count("events") == before
    assert await node.count("room_aliases") == 0
    assert await node.count("room_current_state") == 1


async def test_power_levels_enforced(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room}")
    before = await node.count("events")
    for method, path, body in (
        ("PUT", f"/rooms/{room}/state/m.room.name", {"name": "mine"}),
        ("POST", f"/rooms/{room}/kick", {"user_id": alice.user_id}),
        ("POST", f"/rooms/{room}/ban", {"user_id": alice.user_id}),
        ("PUT", f"/rooms/{room}/state/m.room.power_levels", {"users": {bob.user_id: 100}}),
    ):
        status, err = await bob.call(method, path, body)
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN"), (path, err)
    assert await node.count("events") == before
    # Alice may: kick, then ban and unban.
    await alice.ok("POST", f"/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "bye"})
    assert (await bob.call("PUT", f"/rooms/{room}/send/m.room.message/x", {}))[0] == 403
    await alice.ok("POST", f"/rooms/{room}/ban", {"user_id": bob.user_id})
    assert (await bob.call("POST", f"/join/{room}"))[0] == 403
    await alice.ok("POST", f"/rooms/{room}/unban", {"user_id": bob.user_id})
    await bob.ok("POST", f"/rooms/{room}/join")


async def test_state_redact_members_forget(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(
        preset="public_chat", room_version="11",
        initial_state=[{"type": "m.room.topic", "content": {"topic": "t0"}}],
        creation_content={"m.federate": False},
    )
    state = await alice.ok("GET", f"/rooms/{room}/state")
    by_type = {(e["type"], e["state_key"]): e for e in state}
    assert by_type[("m.room.create", "")]["content"]["m.federate"] is False
    assert by_type[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    assert by_type[("m.room.topic", "")]["content"] == {"topic": "t0"}
    ev = await alice.ok("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "t1"})
    # Same content again: no new event.
    assert await alice.ok("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "t1"}) == ev
    full = await alice.ok("GET", f"/rooms/{room}/state/m.room.topic", params={"format": "event"})
    assert full["event_id"] == ev["event_id"]
    assert (await alice.call("GET", f"/rooms/{room}/state/m.room.avatar"))[0] == 404

    msg = await alice.send(room, "secret")
    red = await alice.ok("PUT", f"/rooms/{room}/redact/{msg}/r1", {"reason": "oops"})
    got = await alice.ok("GET", f"/rooms/{room}/event/{msg}")
    assert got["content"] == {}
    assert got["unsigned"]["redacted_because"]["event_id"] == red["event_id"]
    assert got["unsigned"]["redacted_because"]["redacts"] == msg

    await bob.ok("POST", f"/join/{room}")
    members = await alice.ok("GET", f"/rooms/{room}/members")
    assert {m["state_key"] for m in members["chunk"]} == {alice.user_id, bob.user_id}
    assert all(m["content"]["displayname"] for m in members["chunk"])
    status, err = await bob.call("POST", f"/rooms/{room}/forget")
    assert (status, err["errcode"]) == (400, "M_UNKNOWN")
    await bob.ok("POST", f"/rooms/{room}/leave")
    await bob.ok("POST", f"/rooms/{room}/forget")
    assert (await bob.ok("GET", "/joined_rooms"))["joined_rooms"] == []
    # A user who left still reads what they saw, but not what came after.
    after = await alice.send(room, "after bob left")
    assert (await bob.call("GET", f"/rooms/{room}/event/{after}"))[0] == 404


async def test_messages_pagination_both_ways(node: Node) -> None:
    alice = await node.user("alice")
    room = await alice.create_room(room_version="10")
    sent = [await alice.send(room, f"m{i}") for i in range(7)]

    def bodies(chunk: list[dict[str, object]]) -> list[object]:
        return [e["content"].get("body") for e in chunk  # type: ignore[union-attr]
                if e["type"] == "m.room.message"]

    seen: list[object] = []
    token = None
    for _ in range(10):
        params = {"dir": "b", "limit": "3"}
        if token:
            params["from"] = token
        page = await alice.ok("GET", f"/rooms/{room}/messages", params=params)
        seen.extend(bodies(page["chunk"]))
        token = page.get("end")
        if token is None:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]
    # Forwards from the start, same pages again and again (stable tokens).
    forward: list[object] = []
    token = None
    pages = []
    for _ in range(10):
        params = {"dir": "f", "limit": "4"}
        if token:
            params["from"] = token
        page = await alice.ok("GET", f"/rooms/{room}/messages", params=params)
        pages.append(page)
        forward.extend(bodies(page["chunk"]))
        token = page.get("end")
        if token is None:
            break
    assert forward == [f"m{i}" for i in range(7)]
    again = await alice.ok("GET", f"/rooms/{room}/messages",
                           params={"dir": "f", "limit": "4", "from": pages[1]["start"]})
    assert again == pages[1] | {"chunk": again["chunk"]} and bodies(again["chunk"]) == bodies(
        pages[1]["chunk"])
    # `to` bounds a page; filters apply.
    only = await alice.ok("GET", f"/rooms/{room}/messages", params={
        "dir": "b", "limit": "50", "filter": '{"types": ["m.room.create"]}'})
    assert [e["type"] for e in only["chunk"]] == ["m.room.create"]

    ctx = await alice.ok("GET", f"/rooms/{room}/context/{sent[3]}", params={"limit": "4"})
    assert ctx["event"]["event_id"] == sent[3]
    assert bodies(ctx["events_before"]) == ["m2", "m1"]
    assert bodies(ctx["events_after"]) == ["m4", "m5"]
    assert any(e["type"] == "m.room.create" for e in ctx["state"])
    later = await alice.ok("GET", f"/rooms/{room}/messages",
                           params={"dir": "f", "from": ctx["end"], "limit": "1"})
    assert bodies(later["chunk"]) == ["m6"]
