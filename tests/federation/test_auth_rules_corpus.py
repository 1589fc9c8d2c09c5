"""Every event of the Synapse corpus passes the auth rules (synapse-corpus/INDEX.md).

Each event is checked twice: against its own ``auth_events`` (after the
selection rules) and against the room state before it, as recorded in
``expected.json``. The corpus has no negative cases; those are in the vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from federation.auth_rules import (
    auth_types_for_event,
    authorising_rule,
    can_apply_redaction,
    check_auth,
    check_auth_events_selection,
)
from federation.events import Event
from federation.room_versions import get_room_version

CORPUS = Path("/work/shared/synapse-corpus")
VERSIONS = ["10", "11", "12"]


def _load(version: str) -> tuple[list[Event], list[dict[str, Any]]]:
    rv = get_room_version(version)
    pdus = json.loads((CORPUS / f"v{version}" / "events.json").read_text())
    expected = json.loads((CORPUS / f"v{version}" / "expected.json").read_text())
    events = [Event(pdu, exp["event_id"], rv) for pdu, exp in zip(pdus, expected, strict=True)]
    return events, expected


@pytest.mark.parametrize("version", VERSIONS)
def test_every_corpus_event_is_allowed_by_its_own_auth_events(version: str) -> None:
    events, _ = _load(version)
    by_id = {ev.event_id: ev for ev in events}
    rules = []
    for ev in events:
        keyed = check_auth_events_selection(ev, by_id)
        check_auth(ev, keyed)
        rules.append(authorising_rule(ev, keyed))
    # The scenario's notable steps were allowed by the rule one would expect.
    assert rules[0] == "create.allow"
    assert rules[1] == "member.join.creator_first"
    assert rules[8] == "member.join.public"
    assert rules[9] == "power_levels.allow"
    assert rules[21] == "member.leave.self"
    assert rules[24] == "member.leave.kick"
    assert rules[26] == "member.ban.allow"
    assert rules[27] == "member.leave.kick"
    assert rules[29] == "default.allow"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_corpus_event_is_allowed_by_the_state_before_it(version: str) -> None:
    events, expected = _load(version)
    by_id = {ev.event_id: ev for ev in events}
    for ev, exp in zip(events, expected, strict=True):
        state = {(t, sk): by_id[eid] for t, sk, eid in exp["state_before"]}
        check_auth(ev, state)


@pytest.mark.parametrize("version", VERSIONS)
def test_selection_matches_the_corpus(version: str) -> None:
    events, expected = _load(version)
    for ev, exp in zip(events, expected, strict=True):
        state = {(t, sk): eid for t, sk, eid in exp["state_before"]}
        wanted = auth_types_for_event(ev, ev.room_version)
        selected = sorted(state[k] for k in wanted if k in state)
        assert selected == sorted(exp["auth_events_by_selection_algorithm"]), ev
        assert sorted(ev.auth_event_ids) == selected
        # The event builder passes a partial event, not an Event.
        partial = {k: ev.pdu[k] for k in ("type", "sender", "state_key", "content") if k in ev.pdu}
        assert auth_types_for_event(partial, ev.room_version) == wanted


@pytest.mark.parametrize("version", VERSIONS)
def test_the_corpus_redaction_applies(version: str) -> None:
    events, expected = _load(version)
    by_id = {ev.event_id: ev for ev in events}
    redaction, redacted = events[20], events[16]
    state = {(t, sk): by_id[eid] for t, sk, eid in expected[20]["state_before"]}
    # Alice has the redact level; Bob's message is on another server.
    assert can_apply_redaction(redaction, redacted, state)
    # The same redaction does not apply to an event it does not name.
    assert not can_apply_redaction(redaction, events[15], state)
