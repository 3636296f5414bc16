"""The client specification: every tests/client_scenarios/*.json, run against the pure receive
and ack-queue modules (webim_client/inbox.py, outbox.py) wired as the Client wires them. Node runs
the same files against frontend/lib/inbox.js and outbox.js (frontend/tests/scenarios.test.mjs)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from webim_client.inbox import Inbox, is_group
from webim_client.outbox import Outbox
from webim_client.typing import Typing

FOLDER = Path(__file__).parent / "client_scenarios"
ME = {"kind": "user", "id": "alice"}
PEER = {"kind": "user", "id": "bob"}
Frame = dict[str, Any]


class FakeClock:
    """set_timeout/clear_timeout in ms; `advance` runs every timer that falls due, in order."""

    def __init__(self) -> None:
        self.time = 0.0
        self._timers: dict[int, tuple[float, int, Callable[[], None]]] = {}
        self._next = 1

    def set_timeout(self, action: Callable[[], None], delay_ms: float) -> int:
        handle = self._next
        self._next += 1
        self._timers[handle] = (self.time + max(0.0, delay_ms), handle, action)
        return handle

    def clear_timeout(self, handle: Any) -> None:
        self._timers.pop(handle, None)

    def advance(self, ms: float) -> None:
        end = self.time + ms
        while True:
            due = sorted((at, handle) for at, handle, _ in self._timers.values() if at <= end)
            if not due:
                break
            at, handle = due[0]
            action = self._timers.pop(handle)[2]
            self.time = max(self.time, at)
            action()
        self.time = end


def fill_message(message: Frame) -> Frame:
    """A `message` frame may leave out from/text/time/client_id (the peer's, "m<seq>", seq, "b-<seq>")."""
    seq = message["seq"]
    return {"type": "message", "from": PEER, "text": f"m{seq}", "time": seq, "client_id": f"b-{seq}", **message}


class Harness:
    def __init__(self, config: dict[str, Any]) -> None:
        self.shown: list[str] = []
        self.acks: list[list[Any]] = []
        self.ack_ids: dict[str, str] = {}  # "ack-<n>" (the n-th ack sent) -> its conversation
        self.gone: list[str] = []  # groups dropped after a `not_member`
        self.sends: list[str] = []
        self.pulls = 0
        self.pings = 0  # tail-checking pings the settle check asked for
        self.states: dict[str, str] = {}
        self.online = True
        self.clock = FakeClock()
        self.inbox = Inbox(self.clock, ack_delay_ms=config.get("ackDelayMs", 20),
                           gap_grace_ms=config.get("gapGraceMs", 1000),
                           in_flight=lambda cid: self.outbox.in_flight(cid),  # noqa: PLW0108 (outbox comes next)
                           on_show=lambda m: self.shown.append(f"{m['conversation_id']}/{m['seq']}"),
                           on_ack=self._ack, on_pull=self._pull, me=ME,
                           group_ack_ms=config.get("groupAckMs", 2000),
                           group_ack_messages=config.get("groupAckMessages", 20),
                           settle_check_ms=config.get("settleCheckMs", 3000), on_ping=self._ping)
        self.outbox = Outbox(self._transmit, self.clock, ack_timeout_ms=config.get("ackTimeoutMs", 3000),
                             max_attempts=config.get("maxAttempts", 4), on_change=self._changed)
        self.outbox.set_online(True)
        self.typing_sent: list[str] = []  # the conversation of each `typing` frame transmitted
        self.typing = Typing(self._transmit_typing, self.clock, me=ME)

    def _transmit_typing(self, frame: Frame) -> bool:
        if not self.online:
            return False
        self.typing_sent.append(frame["conversation_id"])
        return True

    def _ack(self, conversation_id: str, seq: int) -> None:
        if self.online:
            self.acks.append([conversation_id, seq])
            self.ack_ids[f"ack-{len(self.acks)}"] = conversation_id

    def _pull(self) -> None:
        self.pulls += 1

    def _ping(self) -> None:
        self.pings += 1

    def _transmit(self, frame: Frame) -> bool:
        if not self.online:
            return False
        self.sends.append(frame["id"])
        return True

    def _changed(self, view: Frame) -> None:
        self.states[view["id"]] = view["state"]
        self.inbox.recheck()

    # as Client._dispatch, _accepted and _receive
    def frame(self, frame: Frame) -> None:
        kind = frame["type"]
        if kind == "sent":
            view = self.outbox.accepted({"time": frame["seq"], **frame})
            if view is not None:
                self.receive({"type": "message", "conversation_id": frame["conversation_id"], "seq": frame["seq"],
                              "from": ME, "text": view["text"], "time": frame.get("time", frame["seq"]),
                              "client_id": view["id"]}, own=True)
        elif kind == "message":
            self.receive(fill_message(frame))
        elif kind == "delivered":
            self.outbox.delivered(frame["conversation_id"], frame["seq"])
        elif kind == "seen":
            self.outbox.seen(frame["conversation_id"], frame["seq"])
        elif kind == "typing":
            self.typing.received(frame)
        elif kind == "acked":
            self.inbox.acked(frame["conversation_id"], frame["seq"])
        elif kind == "error":
            # as Client._refused: the conversation the refused frame named (an ack, a send)
            conversation_id = self.ack_ids.get(frame["ref"])
            view = self.outbox.rejected(frame["ref"], frame)
            if view is not None:
                conversation_id = view["conversation_id"]
            if (frame.get("code") == "not_member" and conversation_id and is_group(conversation_id)
                    and not self.inbox.gone(conversation_id)):
                self.inbox.leave(conversation_id)  # removed while away: drop it, never retry
                self.gone.append(conversation_id)
        elif kind in ("group", "group_changed") and frame.get("seq") is not None:
            # our own change's answer: its event message fills the seq, as `sent` does
            self.receive({"type": "message", "conversation_id": frame["conversation_id"], "seq": frame["seq"],
                          "from": ME, "text": "", "time": frame.get("time", frame["seq"]),
                          "client_id": frame["ref"]}, own=True)

    def receive(self, message: Frame, from_pull: bool = False, own: bool = False) -> None:
        if not own and message.get("from") == ME and self.outbox.has(message.get("client_id", "")):
            self.outbox.accepted({"ref": message["client_id"], "conversation_id": message["conversation_id"],
                                  "seq": message["seq"], "time": message["time"]})
        self.inbox.receive(message, from_pull=from_pull, own=own)
        if not own:
            self.typing.message(message)

    def step(self, step: dict[str, Any]) -> None:
        if "online" in step:
            self.online = step["online"]
            self.outbox.set_online(step["online"])
            self.inbox.set_online(step["online"])
        elif "send" in step:
            self.outbox.add({"action": "send", **step["send"]})
        elif "resend" in step:
            self.outbox.resend(step["resend"])
        elif "typing" in step:
            self.typing.typed(step["typing"])
        elif "frame" in step:
            self.frame(step["frame"])
        else:
            self.other_step(step)

    def other_step(self, step: dict[str, Any]) -> None:
        if "sync" in step:
            for message in step["sync"]["messages"]:
                self.receive(fill_message(message), from_pull=True)
            if not step["sync"]["more"]:
                self.inbox.pulled()
        elif "listed" in step:
            for conversation_id in step["listed"]:
                self.inbox.member(conversation_id)
        elif "pong" in step:
            self.inbox.tails(step["pong"])  # as Client._dispatch: a pong's `groups`
        elif "idle" in step:
            self.inbox.flush()
        elif "advance" in step:
            self.clock.advance(step["advance"])
        elif "expect" in step:
            self.check(step["expect"], step.get("note", ""))
        else:
            raise AssertionError(f"unknown step {step}")

    def check(self, expect: dict[str, Any], note: str) -> None:
        if "shown" in expect:
            assert self.shown == expect["shown"], f"shown {note}"
        if "acks" in expect:
            assert self.acks == expect["acks"], f"acks {note}"
        if "sends" in expect:
            assert self.sends == expect["sends"], f"sends {note}"
        if "pulls" in expect:
            assert self.pulls == expect["pulls"], f"pulls {note}"
        if "pings" in expect:
            assert self.pings == expect["pings"], f"pings {note}"
        if "tailCheck" in expect:
            assert self.inbox.holds_group() == expect["tailCheck"], f"tailCheck {note}"
        if "since" in expect:
            assert self.inbox.since() == expect["since"], f"since {note}"
        for message_id, state in expect.get("states", {}).items():
            assert self.states.get(message_id) == state, f"state of {message_id} {note}"
        for conversation_id, have in expect.get("have", {}).items():
            assert self.inbox.have(conversation_id) == have, f"have {conversation_id} {note}"
        for conversation_id, people in expect.get("typing", {}).items():
            assert self.typing.who(conversation_id) == people, f"typing in {conversation_id} {note}"
        if "gone" in expect:
            assert self.gone == expect["gone"], f"gone {note}"
        if "typingSent" in expect:
            assert self.typing_sent == expect["typingSent"], f"typingSent {note}"


FILES = sorted(FOLDER.glob("*.json"))


def test_the_folder_holds_only_scenarios_and_every_one_is_run() -> None:
    """Both runners load the whole folder; a file they would skip fails here."""
    others = sorted(p.name for p in FOLDER.iterdir() if p.suffix != ".json" and p.name != "README.md")
    assert others == []
    assert len(FILES) >= 10


def test_every_rule_of_protocol_section_9_has_a_scenario() -> None:
    """The README's rule table is the list of §9 rules; each names scenarios that cover it."""
    readme = (FOLDER / "README.md").read_text()
    table = dict(re.findall(r"^\| `([0-9a-z-]+)` \| .*? \| (.*?) \|$", readme, flags=re.M))
    assert table, "no rule table in the README"
    covered: dict[str, set[str]] = {}
    for path in FILES:
        for rule in json.loads(path.read_text())["rules"]:
            covered.setdefault(rule, set()).add(path.name)
    assert set(covered) <= set(table), f"scenarios name rules the README lacks: {set(covered) - set(table)}"
    for rule, listed in table.items():
        names = set(re.findall(r"`([^`]+\.json)`", listed))
        found = covered.get(rule, set())
        assert names and names <= found, f"rule {rule}: README lists {names}, covered by {found}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    scenario = json.loads(path.read_text())
    assert scenario["rules"], "a scenario names the §9 rules it covers"
    harness = Harness(scenario.get("config", {}))
    for step in scenario["steps"]:
        harness.step(step)
