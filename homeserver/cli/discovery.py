"""``homeserver discovery peers|crawl|probe|add-peer|remove-peer``: room discovery.

Works on the database the config names, with or without the node running
(docs/usage/room_discovery.md). ``peers`` lists every crawled peer with its
health and last crawl; ``probe`` and ``crawl`` run one round now, from this
process, signing as the node's server names; ``add-peer``/``remove-peer``
change the peers added at run time (a running node picks them up on its next
round). Exit status 0 on success, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace
from typing import Any

import aiohttp

from federation.clock import RealClock
from federation.errors import MatrixError
from homeserver.cli._common import open_database, run_with_config
from homeserver.config import HomeserverConfig
from homeserver.discovery.service import Discovery, discovery_for
from homeserver.keys import KeyService
from homeserver.metrics import Metrics
from homeserver.server import federation_ssl_context
from homeserver.signing_key import SigningKeyError, read_signing_key_file
from homeserver.tenants import TenantError, TenantRegistry
from homeserver.trust_domain import TrustDomain
from storage.errors import StorageError

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "discovery",
        help="Show the room discovery peers and their health; crawl or probe them now.",
        description="Room discovery (docs/usage/room_discovery.md) on the database the "
        "config names.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
        a.add_argument("--json", action="store_true", help="print JSON")
        a.set_defaults(func=run_discovery)
        return a

    action("peers", "List the peers with their health, last crawl and rooms indexed.")
    action("crawl", "Crawl every peer's public room directory now.")
    action("probe", "Probe every peer's health now.")
    add = action("add-peer", "Crawl this server too (it must be in the trust domain).")
    add.add_argument("server_name", metavar="SERVER")
    rm = action("remove-peer", "Stop crawling a server added with add-peer.")
    rm.add_argument("server_name", metavar="SERVER")


async def _open(config: HomeserverConfig) -> tuple[Discovery, Any]:
    clock = RealClock()
    signing_keys = read_signing_key_file(config.signing_key_path)
    db = await open_database(config)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=federation_ssl_context(config)))
    node = SimpleNamespace(config=config, clock=clock, database=db, http_client=session,
                           signing_keys=signing_keys, server_name=config.server_name,
                           metrics=Metrics(), tenants=None, trust=None, keys=None)
    try:
        node.tenants = await TenantRegistry.load(
            config=config, database=db, clock=clock, primary_signing_keys=signing_keys)
        node.keys = KeyService.build(config=config, clock=clock, database=db, session=session,
                                     signing_keys=signing_keys)
        for tenant in node.tenants.all():
            if not tenant.is_primary:
                node.keys.client.set_signing_key(tenant.server_name, tenant.signing_keys()[0])
        node.trust = await TrustDomain.load(config=config, database=db, clock=clock)
        node.keys.client.destination_guard = node.trust.check_destination
    except BaseException:
        await _close(node)
        raise
    return discovery_for(node), node


async def _close(node: Any) -> None:
    if node.tenants is not None:
        await node.tenants.close()
    await node.http_client.close()
    await node.database.close()


def _ts(value: int | None) -> str:
    return "-" if value is None else str(value)


async def _run(args: argparse.Namespace, config: HomeserverConfig) -> None:
    discovery, node = await _open(config)
    try:
        if args.action == "add-peer":
            await discovery.add_peer(args.server_name)
            print(f"added {args.server_name}")
        elif args.action == "remove-peer":
            if not await discovery.remove_peer(args.server_name):
                raise MatrixError(404, "M_NOT_FOUND",
                                  f"{args.server_name} was not added with add-peer")
            print(f"removed {args.server_name}")
        elif args.action == "probe":
            states = await discovery.probe_once()
            _print(states, args.json, lambda k, v: f"{k}\t{v}")
        elif args.action == "crawl":
            results = await discovery.crawl_once()
            _print(results, args.json, lambda k, v: f"{k}\t" + " ".join(
                f"{a}={b}" for a, b in sorted(v.items())))
        else:
            peers = await discovery.describe_peers()
            if args.json:
                for p in peers:
                    print(json.dumps(p, sort_keys=True))
            for p in peers if not args.json else ():
                print("\t".join([
                    p["server_name"], p["state"], f"rooms={p['rooms_indexed']}",
                    f"last_crawl_ts={_ts(p['last_crawl_ts'])}",
                    f"error={p['last_crawl_error'] or '-'}", p["source"],
                ]))
    finally:
        await _close(node)


def _print(values: dict[str, Any], as_json: bool, line: Any) -> None:
    if as_json:
        print(json.dumps(values, sort_keys=True))
        return
    for k, v in sorted(values.items()):
        print(line(k, v))


def run_discovery(args: argparse.Namespace) -> int:
    return run_with_config(
        f"homeserver discovery {args.action}", args.config, lambda config: _run(args, config),
        (TenantError, StorageError, SigningKeyError, MatrixError, OSError),
    )
