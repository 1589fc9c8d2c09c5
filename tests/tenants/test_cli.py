"""``homeserver tenant ...`` and ``homeserver register-user``, run as operators
run them (subprocesses), then checked through a started node on both engines."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from homeserver.server import HomeServer
from tests.tenants.conftest import Api, NodeFn, node_config

ApiFor = Callable[[HomeServer, str | None], Api]


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "homeserver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, database_url: str) -> str:
    node_config(tmp_path, database_url)  # writes the signing key
    path = tmp_path / "homeserver.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server_name": "hs.test",
                "data_dir": str(tmp_path),
                "database": {"url": database_url},
                "listeners": [{"type": "client", "port": 0}],
                "password_hash_rounds": 4,
                "tenants": [{"server_name": "b.test"}],
            }
        )
    )
    return str(path)


async def test_tenant_and_register_user_commands(
    tmp_path: Path, database_url: str, node: NodeFn, api_for: ApiFor
) -> None:
    config = write_config(tmp_path, database_url)

    code, out, err = await cli("tenant", "create", "--config", config, "c.test",
                               "--client-hostname", "chat.c.test", "--max-users", "2")  # fmt: skip
    assert code == 0, err
    assert out.startswith("created c.test")
    assert (tmp_path / "tenants" / "c.test.signing.key").exists()
    code, out, err = await cli("tenant", "create", "--config", config, "c.test")
    assert (code, err.strip()) == (1, "homeserver tenant create: tenant c.test already exists")
    code, out, err = await cli("tenant", "create", "--config", config, "bad name!")
    assert code == 1 and "not a valid server name" in err
    code, out, err = await cli("tenant", "create", "--config", config, "d.test",
                               "--mode", "dedicated")  # fmt: skip
    assert code == 1 and "--database-url" in err

    code, out, err = await cli("tenant", "suspend", "--config", config, "b.test")
    assert (code, out.strip()) == (0, "suspended b.test"), err
    code, out, err = await cli("tenant", "suspend", "--config", config, "hs.test")
    assert code == 1 and "cannot be suspended" in err
    code, out, err = await cli("tenant", "list", "--config", config)
    assert code == 0, err
    rows = [line.split("\t")[:4] for line in out.splitlines()]
    assert rows == [
        ["hs.test", "active", "shared", "config"],
        ["b.test", "suspended", "shared", "config"],
        ["c.test", "active", "shared", "runtime"],
    ]

    code, out, err = await cli("register-user", "--config", config, "--admin", "root", "pw")
    assert (code, out.strip()) == (0, "registered @root:hs.test (admin)"), err
    code, out, err = await cli("register-user", "--config", config, "--tenant", "c.test",
                               "carol", "pw2")  # fmt: skip
    assert (code, out.strip()) == (0, "registered @carol:c.test"), err
    code, out, err = await cli("register-user", "--config", config, "root", "x")
    assert code == 1 and "already exists" in err
    code, out, err = await cli("register-user", "--config", config, "Bad Name", "x")
    assert code == 1 and "can only contain" in err
    code, out, err = await cli("register-user", "--config", config, "--tenant", "z.test", "u", "x")
    assert code == 1 and "no tenant named z.test" in err

    # The node sees all of it: the admin manages tenants, carol logs in on c.test.
    hs = await node(tenants=[{"server_name": "b.test"}])
    a = api_for(hs, "hs.test")
    status, body = await a.login("root", "pw")
    assert status == 200, body
    root = body["access_token"]
    status, body = await a.call("GET", "/_concord/admin/v1/tenants", token=root)
    assert [(t["server_name"], t["state"]) for t in body["tenants"]] == [
        ("hs.test", "active"),
        ("b.test", "suspended"),
        ("c.test", "active"),
    ]
    status, body = await api_for(hs, "chat.c.test").login("carol", "pw2")
    assert (status, body.get("user_id")) == (200, "@carol:c.test")
    await hs.stop()

    code, out, err = await cli("tenant", "remove", "--config", config, "b.test")
    assert code == 1 and "declared in the config" in err
    code, out, err = await cli("tenant", "resume", "--config", config, "b.test")
    assert code == 0, err
    code, out, err = await cli("tenant", "remove", "--config", config, "c.test")
    assert (code, out.strip()) == (0, "removed c.test"), err
    code, out, err = await cli("tenant", "list", "--config", config, "--json")
    assert [line.split('"server_name": ')[1].split('"')[1] for line in out.splitlines()] == [
        "hs.test",
        "b.test",
    ]


async def test_cli_with_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: 5\n")
    for args in (("tenant", "list"), ("register-user", "u", "p")):
        code, _out, err = await cli(*args[:2], "--config", str(bad), *args[2:])
        assert code == 1 and "invalid configuration" in err and "Traceback" not in err
