"""The Synapse peer itself works, and it fetches and accepts a Concord node's keys.

These are the ground the other interop tests stand on: if Synapse does not
start, register users or keep messages here, a failure elsewhere says
nothing about Concord.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import decode_verify_key_bytes, generate_signing_key, get_verify_key
from signedjson.sign import verify_signed_json

from federation.transport.client import FederationHttpError
from homeserver.keys import key_service_for
from tests.interop.concord import (
    AuthenticatedRequest,
    ConcordFactory,
    recording_authenticated,
    with_federation_registrars,
)
from tests.interop.synapse import (
    SYNAPSE_VERSION,
    SynapseClient,
    SynapseRequestError,
    SynapseServer,
    ensure_synapse_venv,
    synapse_venv_dir,
)

pytestmark = pytest.mark.interop


def _b64decode(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


async def test_synapse_answers_versions_over_tls(synapse_client: SynapseClient) -> None:
    versions = await synapse_client.versions()
    assert "v1.11" in versions["versions"] or "v1.12" in versions["versions"]
    server = synapse_client.server
    assert server.server_name == f"127.0.0.1:{server.port}"
    assert server.base_url == f"https://127.0.0.1:{server.port}"


def test_synapse_venv_is_cached_and_reused(synapse: SynapseServer) -> None:
    venv = synapse_venv_dir()
    assert synapse.python == venv / "bin" / "python"
    assert (venv / ".concord-installed").read_text().strip() == SYNAPSE_VERSION
    # A second call finds the marker and the import, and installs nothing.
    assert ensure_synapse_venv() == synapse.python


async def test_register_with_shared_secret_and_open_registration(
    synapse_client: SynapseClient,
) -> None:
    admin = await synapse_client.register(admin=True)
    user = await synapse_client.register_open()
    assert admin.user_id.endswith(":" + synapse_client.server.server_name)
    assert user.user_id.endswith(":" + synapse_client.server.server_name)
    whoami = await synapse_client.request("GET", "/_matrix/client/v3/account/whoami", user=user)
    assert whoami["user_id"] == user.user_id
    # The admin flag took: only the admin may read the server-side user list.
    await synapse_client.request("GET", "/_synapse/admin/v2/users", user=admin)
    with pytest.raises(SynapseRequestError) as exc:
        await synapse_client.request("GET", "/_synapse/admin/v2/users", user=user)
    assert exc.value.status == 403


async def test_a_wrong_shared_secret_mac_is_refused(synapse_client: SynapseClient) -> None:
    nonce = (await synapse_client.request("GET", "/_synapse/admin/v1/register"))["nonce"]
    with pytest.raises(SynapseRequestError) as exc:
        await synapse_client.request(
            "POST",
            "/_synapse/admin/v1/register",
            body={"nonce": nonce, "username": "mallory", "password": "x", "mac": "00" * 20},
        )
    assert exc.value.status == 403


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
async def test_room_in_each_version_keeps_messages(
    synapse_client: SynapseClient, room_version: str
) -> None:
    alice = await synapse_client.register()
    bob = await synapse_client.register()
    room_id = await synapse_client.create_room(
        alice, room_version=room_version, name=f"v{room_version}", topic="interop"
    )
    if room_version == "12":
        # v12 room IDs are the create event's hash and carry no server name.
        assert ":" not in room_id
    else:
        assert room_id.endswith(":" + synapse_client.server.server_name)
    await synapse_client.join(bob, room_id)
    sent = [
        await synapse_client.send_message(alice if i % 2 else bob, room_id, f"message {i}")
        for i in range(5)
    ]

    events = await synapse_client.all_messages(bob, room_id)
    create = events[0]
    assert create["type"] == "m.room.create"
    assert create["content"]["room_version"] == room_version
    messages = [e for e in events if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in messages] == sent
    assert [e["content"]["body"] for e in messages] == [f"message {i}" for i in range(5)]
    name = await synapse_client.state_event(bob, room_id, "m.room.name")
    assert name == {"name": f"v{room_version}"}


async def test_sync_sees_a_new_message(synapse_client: SynapseClient) -> None:
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(alice, room_version="11")
    event_id = await synapse_client.send_message(alice, room_id, "hello sync")

    def has_message(resp: dict[str, Any]) -> bool:
        room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
        return any(e["event_id"] == event_id for e in room.get("timeline", {}).get("events", []))

    await synapse_client.wait_for_sync(alice, has_message)


async def test_synapse_fetches_and_accepts_concord_keys(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    """A request signed by a Concord node succeeds at Synapse only if Synapse fetched
    the node's key from ``GET /_matrix/key/v2/server`` over TLS and verified it; its
    notary endpoint then serves that key, signed by the node and by Synapse."""
    hs = await concord_nodes()
    keys = key_service_for(hs)
    synapse = synapse_client.server
    alice = await synapse_client.register()
    await synapse_client.request(
        "PUT",
        f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
        user=alice,
        body={"displayname": "Alice at Synapse"},
    )

    profile = await keys.client.get_json(
        synapse.server_name,
        "/_matrix/federation/v1/query/profile",
        query={"user_id": alice.user_id, "field": "displayname"},
        origin=hs.server_name,
    )
    assert profile == {"displayname": "Alice at Synapse"}

    # Synapse's notary view: only what it has fetched and checked is served.
    result = await synapse_client.query_server_keys(hs.server_name)
    [response] = result["server_keys"]
    assert response["server_name"] == hs.server_name
    verify_key = get_verify_key(hs.signing_key)
    key_id = f"{verify_key.alg}:{verify_key.version}"
    assert response["verify_keys"][key_id]["key"] == (
        base64.b64encode(verify_key.encode()).decode().rstrip("=")
    )
    # Ours, untouched by the trip through Synapse's database ...
    verify_signed_json(response, hs.server_name, verify_key)
    # ... and Synapse's countersignature as a notary.
    own = await synapse_client.request("GET", "/_matrix/key/v2/server")
    [(syn_key_id, syn_key)] = own["verify_keys"].items()
    syn_verify_key = decode_verify_key_bytes(syn_key_id, _b64decode(syn_key["key"]))
    verify_signed_json(response, synapse.server_name, syn_verify_key)


async def test_synapse_notary_fetches_concord_keys_by_key_id(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    """Asked for a key ID it has not seen, Synapse's notary fetches the node's
    ``/_matrix/key/v2/server`` itself and serves it only if the node's signature holds."""
    hs = await concord_nodes()
    verify_key = get_verify_key(hs.signing_key)
    key_id = f"{verify_key.alg}:{verify_key.version}"
    # Nothing stored yet, and a query without key ID does not fetch.
    assert (await synapse_client.query_server_keys(hs.server_name)) == {"server_keys": []}

    [response] = (await synapse_client.query_server_keys(hs.server_name, key_id))["server_keys"]
    assert response["server_name"] == hs.server_name
    assert set(response["verify_keys"]) == {key_id}
    assert response["valid_until_ts"] > 0
    verify_signed_json(response, hs.server_name, verify_key)
    # Stored now: the plain query serves it too.
    [stored] = (await synapse_client.query_server_keys(hs.server_name))["server_keys"]
    assert stored["verify_keys"] == response["verify_keys"]


async def test_a_request_signed_with_an_unknown_key_is_refused(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    """The key check above can fail: a node whose published key is not the one it
    signs with gets 401 from Synapse."""
    hs = await concord_nodes()
    keys = key_service_for(hs)
    impostor = generate_signing_key("impostor")
    keys.client.set_signing_key(hs.server_name, impostor)
    with pytest.raises(FederationHttpError) as exc:
        await keys.client.get_json(
            synapse_client.server.server_name,
            "/_matrix/federation/v1/query/profile",
            query={"user_id": "@nobody:" + synapse_client.server.server_name},
            origin=hs.server_name,
        )
    assert exc.value.status == 401


async def test_concord_authenticates_requests_signed_by_synapse(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    """Synapse's X-Matrix signature (raw path and query as sent, ``destination`` with
    the port) passes Concord's middleware, with Synapse's key fetched by our keyring."""
    records: list[AuthenticatedRequest] = []
    hs = await concord_nodes(
        registrars=with_federation_registrars(recording_authenticated(records))
    )
    alice = await synapse_client.register()
    bob = f"@bob:{hs.server_name}"
    # Synapse asks the node over federation; what the node answers (no profile
    # servlet yet) does not matter here, only that the request got through.
    await synapse_client.request(
        "GET", f"/_matrix/client/v3/profile/{bob}", user=alice, expect=None
    )
    synapse = synapse_client.server.server_name
    assert AuthenticatedRequest("GET", "/_matrix/federation/v1/query/profile", synapse) in records


def test_stop_ends_the_process(synapse_python: Path, tmp_path: Path) -> None:
    """Teardown really ends Synapse, even one that ignores SIGTERM."""
    from tests.interop.synapse import start_synapse

    server = start_synapse(synapse_python, tmp_path)
    assert server.process is not None
    pid = server.process.pid
    server.stop()
    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # A stand-in that ignores SIGTERM gets SIGKILL after the bound.
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    server.process = stubborn
    server.stop(timeout_s=0.5)
    assert stubborn.returncode == -signal.SIGKILL
