"""``homeserver federation destinations|dead-letters|replay``: delivery, by hand.

Works on the databases the config names (the node's and each dedicated
tenant's), with or without the node running, through the same service as the
admin API (:class:`~homeserver.federation_sender.admin.DeliveryAdmin`). A
running node sends rows queued here at its next outbox sweep (within a
minute); ``--wait`` follows them until they leave the outbox. Exit status 0
on success, 1 with a one-line reason otherwise. docs/usage/delivery.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from federation.clock import RealClock
from homeserver.cli._common import open_registry, run_with_config
from homeserver.config import HomeserverConfig
from homeserver.federation_sender.admin import (
    DeliveryAdmin,
    ReplayScopeError,
    parse_age,
    parse_since,
    tenant_databases,
)
from homeserver.tenants import TenantError
from storage.errors import StorageError
from storage.stores.dead_letters import DeadLetterFilter, DeadLetterReason

__all__ = ["ProgressBar", "add_parser"]

WAIT_POLL_S = 1.0


class CliError(Exception):
    pass


class ProgressBar:
    """``label [#####.....] done/total`` redrawn in place on a terminal (or
    when forced); silent otherwise, so scripts see only the summary line."""

    def __init__(self, label: str, *, out: TextIO, enabled: bool, width: int = 30) -> None:
        self._label = label
        self._out = out
        self._enabled = enabled
        self._width = width
        self._last = ""

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        filled = self._width if total <= 0 else int(self._width * done / total)
        line = f"\r{self._label} [{'#' * filled}{'.' * (self._width - filled)}] {done}/{total}"
        if line != self._last:
            self._out.write(line)
            self._out.flush()
            self._last = line

    def finish(self) -> None:
        if self._enabled and self._last:
            self._out.write("\n")
            self._out.flush()


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "federation",
        help="Inspect outbound delivery: destinations, dead letters, replay windows.",
        description="Outbound federation delivery (docs/usage/delivery.md), on the database "
        "the config names. A running node sends what is queued here at its next sweep.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
        a.set_defaults(func=run_federation)
        return a

    d = action("destinations", "List destinations: state, queue depth, last success and "
               "failure, next retry, dead letters.")
    d.add_argument("--json", action="store_true", help="one JSON object per line")
    d.add_argument("--reset", metavar="DESTINATION",
                   help="clear this destination's backoff so it is retried at once")

    dl = action("dead-letters", "List, show, replay or purge dead letters.")
    dl.add_argument("command", nargs="?", default="list",
                    choices=("list", "show", "replay", "purge"),
                    help="list (default), show ID..., replay [ID...], purge [ID...]")
    dl.add_argument("ids", nargs="*", metavar="ID", help="dead-letter IDs (show/replay/purge)")
    dl.add_argument("--destination", metavar="SERVER")
    dl.add_argument("--room", metavar="ROOM_ID")
    dl.add_argument("--reason", choices=sorted(r.value for r in DeadLetterReason))
    dl.add_argument("--origin", metavar="SERVER", help="the sending server name (tenant)")
    dl.add_argument("--older-than", metavar="AGE", help='moved there before, e.g. "2h"')
    dl.add_argument("--newer-than", metavar="AGE", help='moved there within, e.g. "30m"')
    dl.add_argument("--limit", type=int, default=100, help="list at most N (default 100)")
    dl.add_argument("--all", action="store_true", help="purge: every dead letter")
    dl.add_argument("--json", action="store_true", help="one JSON object per line")

    r = action("replay", "Send again every event of a scope since a time, for a peer that "
               "lost data (the receiver drops what it already has).")
    r.add_argument("--destination", required=True, metavar="SERVER")
    r.add_argument("--since", required=True, metavar="TIME",
                   help='ms since the epoch, ISO 8601 (2026-01-31T12:00:00Z) or an age ("2h")')
    r.add_argument("--room", metavar="ROOM_ID", help="only this room")
    r.add_argument("--origin", metavar="SERVER", help="only events of this hosted name")
    r.add_argument("--wait", action="store_true",
                   help="follow the destination's queue until it is empty (needs the node "
                   "running)")
    r.add_argument("--progress", action="store_true",
                   help="draw the progress bar even when stderr is not a terminal")


def _filter(args: argparse.Namespace, now_ms: int) -> DeadLetterFilter:
    def age(text: str | None, flag: str) -> int | None:
        if text is None:
            return None
        try:
            return now_ms - parse_age(text)
        except ValueError:
            raise CliError(f'{flag} expects a duration like "30m", "2h" or "7d"') from None

    return DeadLetterFilter(
        destination=args.destination, room_id=args.room, reason=args.reason,
        origin=args.origin, dead_before_ts=age(args.older_than, "--older-than"),
        dead_since_ts=age(args.newer_than, "--newer-than"),
        ids=tuple(args.ids) if args.ids else None,
    )


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


async def _destinations(admin: DeliveryAdmin, args: argparse.Namespace) -> None:
    if args.reset:
        if not await admin.reset_backoff(args.reset):
            raise CliError(f"no delivery state for {args.reset}")
        print(f"reset the backoff of {args.reset}; a running node retries it at its next sweep")
        return
    for d in await admin.destinations():
        if args.json:
            print(json.dumps(d.to_json(), sort_keys=True))
        else:
            print("\t".join([
                d.destination, d.state, f"queued={d.queue_depth}",
                f"dead_letters={d.dead_letters}", f"last_success={_ts(d.last_success_ts)}",
                f"last_failure={_ts(d.last_failure_ts)}", f"next_retry={_ts(d.next_retry_ts)}",
                f"error={d.last_error or '-'}",
            ]))


async def _dead_letters(admin: DeliveryAdmin, args: argparse.Namespace, now: int) -> None:
    filt = _filter(args, now)
    if args.command == "list":
        letters, total = await admin.dead_letters(filt, limit=max(1, args.limit))
        for dl in letters:
            if args.json:
                print(json.dumps(dl.to_json(), sort_keys=True))
            else:
                what = dl.event_id if dl.kind == "pdu" else f"EDU {dl.edu_type}"
                print("\t".join([
                    dl.dead_letter_id, dl.destination, dl.reason, str(what),
                    dl.room_id or "-", f"attempts={dl.attempts}", f"dead={_ts(dl.dead_ts)}",
                    f"error={dl.last_error or '-'}",
                ]))
        if not args.json:
            print(f"{len(letters)} of {total} dead letters shown", file=sys.stderr)
    elif args.command == "show":
        if not args.ids:
            raise CliError("show needs at least one dead-letter ID")
        for dl_id in args.ids:
            found = await admin.dead_letter(dl_id)
            if found is None:
                raise CliError(f"no dead letter {dl_id}")
            letter, db = found
            body = letter.to_json()
            if letter.kind == "pdu":
                body["event"] = await admin.event_of(letter, db)
            print(json.dumps(body, sort_keys=True, indent=None if args.json else 2))
    elif args.command == "replay":
        n = await admin.replay_dead_letters(filt)
        print(f"replayed {n} dead letters; a running node sends them at its next sweep")
    else:
        if filt.is_empty and not args.all:
            raise CliError("purge needs IDs or filters, or --all for every dead letter")
        n = await admin.purge_dead_letters(filt)
        print(f"purged {n} dead letters")


async def _replay(admin: DeliveryAdmin, args: argparse.Namespace, now: int) -> None:
    try:
        since = parse_since(args.since, now)
    except ValueError:
        raise CliError("--since expects ms since the epoch, an ISO 8601 time or an age "
                       'like "2h"') from None
    show = args.progress or sys.stderr.isatty()
    bar = ProgressBar("queueing", out=sys.stderr, enabled=show)
    try:
        queued = await admin.replay_window(
            args.destination, since, room_id=args.room, origin=args.origin, progress=bar
        )
    except ReplayScopeError as e:
        raise CliError(str(e)) from None
    finally:
        bar.finish()
    print(f"queued {queued} events for {args.destination} since {_ts(since)}")
    if args.wait and queued:
        clock = RealClock()
        start = await admin.pending(args.destination)
        sent = ProgressBar("delivering", out=sys.stderr, enabled=show)
        while True:
            left = await admin.pending(args.destination)
            sent(max(0, start - left), start)
            if left == 0:
                break
            await clock.sleep(WAIT_POLL_S)
        sent.finish()
        print(f"{args.destination}: queue empty (delivered, or see dead-letters)")


async def _run(args: argparse.Namespace, config: HomeserverConfig) -> None:
    db, registry = await open_registry(config)
    clock = RealClock()
    try:
        origins, database_for = tenant_databases(registry, db)
        admin = DeliveryAdmin(clock=clock, origins=origins, database_for=database_for)
        now = clock.time_ms()
        if args.action == "destinations":
            await _destinations(admin, args)
        elif args.action == "dead-letters":
            await _dead_letters(admin, args, now)
        else:
            await _replay(admin, args, now)
    finally:
        await registry.close()
        await db.close()


def run_federation(args: argparse.Namespace) -> int:
    return run_with_config(
        f"homeserver federation {args.action}", args.config, lambda config: _run(args, config),
        (CliError, TenantError, StorageError),
    )
