"""The client specification: every tests/client_scenarios/*.json, run against the client's own
protocol core (webim_client/core.py: the object `Client` feeds every frame to, over inbox.py,
outbox.py and typing.py) with a fake transmit and a fake clock: no copy of the client's dispatch
here, only the scenario's steps turned into the calls the client makes. Node runs the same files
against frontend/lib/core.js, ChatClient's core (frontend/tests/scenarios.test.mjs)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from webim_client.core import ClientCore, CoreSettings
from webim_client.inbox import InboxSettings

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


def settings(config: dict[str, Any]) -> CoreSettings:
    """The scenario's `config` (its names are the JS client's options, in ms)."""
    return CoreSettings(
        ack_timeout_ms=config.get("ackTimeoutMs", 3000), max_attempts=config.get("maxAttempts", 4),
        inbox=InboxSettings(ack_delay_ms=config.get("ackDelayMs", 20), gap_grace_ms=config.get("gapGraceMs", 1000),
                            group_ack_ms=config.get("groupAckMs", 2000),
                            group_ack_messages=config.get("groupAckMessages", 20),
                            settle_check_ms=config.get("settleCheckMs", 3000)))


class Harness:
    """The fake side of the core: a transmit that records the frames (connected or not), a clock,
    and the events counted. Steps become the calls Client makes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.transmitted: list[Frame] = []
        self.shown: list[str] = []
        self.gone: list[str] = []
        self.deleted: list[str] = []  # message_deleted events (§16)
        self.tombstones: list[str] = []  # messages shown deleted: "conversation/seq/text"
        self.pulls = 0
        self.pings = 0
        self.states: dict[str, str] = {}
        self.online = True
        self.acks_made = 0
        self.clock = FakeClock()
        self.core = ClientCore(self.clock, self._transmit, self._new_id, self._event, settings(config))
        self.core.set_identity(ME)
        self.core.set_online(True)

    def _transmit(self, frame: Frame) -> bool:
        if not self.online:
            return False
        self.transmitted.append(frame)
        return True

    def _new_id(self) -> str:
        """Only acks take ids from the core: the n-th is `ack-<n>` (the scenarios' refs name it)."""
        self.acks_made += 1
        return f"ack-{self.acks_made}"

    def _event(self, event: str, data: Any) -> None:
        if event == "message":
            self.shown.append(f"{data['conversation_id']}/{data['seq']}")
            if data.get("deleted"):
                self.tombstones.append(f"{data['conversation_id']}/{data['seq']}/{data['text']}")
        elif event == "message_deleted":
            self.deleted.append(f"{data['conversation_id']}/{data['seq']}")
        elif event == "outgoing":
            self.states[data["id"]] = data["state"]
        elif event == "gone":
            self.gone.append(data["conversation_id"])
        elif event == "pull":
            self.pulls += 1
        elif event == "ping":
            self.pings += 1

    def sent(self, action: str) -> list[Frame]:
        return [frame for frame in self.transmitted if frame.get("action") == action]

    def step(self, step: dict[str, Any]) -> None:
        actions: dict[str, Callable[[Any], Any]] = {
            "online": self._online, "send": lambda send: self.core.send({"action": "send", **send}),
            "resend": self.core.outbox.resend, "typing": self.core.typing.typed,
            "change": self.core.change_started, "frame": lambda frame: self.core.dispatch(fill(frame)),
            "sync": self._sync, "listed": self._listed,
            "pong": lambda groups: self.core.dispatch({"type": "pong", "groups": groups}),
            "idle": lambda _: self.core.inbox.flush(), "advance": self.clock.advance,
            "expect": lambda expect: self.check(expect, step.get("note", "")),
        }
        (name,) = [key for key in step if key != "note"]
        assert name in actions, f"unknown step {step}"
        actions[name](step[name])

    def _online(self, online: bool) -> None:
        self.online = online
        self.core.set_online(online)

    def _listed(self, conversation_ids: list[str]) -> None:
        """A `conversations` answer named these, as Client.conversations takes it."""
        for conversation_id in conversation_ids:
            self.core.inbox.member(conversation_id)

    def _sync(self, page: Frame) -> None:
        """The answer to a pull, as Client._pull_all takes it."""
        for message in page["messages"]:
            self.core.receive(fill_message(message), from_pull=True)
        if not page["more"]:
            self.core.pulled()

    def observed(self) -> dict[str, Any]:
        core = self.core
        return {
            "shown": self.shown, "acks": [[f["conversation_id"], f["seq"]] for f in self.sent("ack")],
            "sends": [f["id"] for f in self.sent("send")], "pulls": self.pulls, "pings": self.pings,
            "tailCheck": core.inbox.holds_group(), "since": core.inbox.since(), "gone": self.gone,
            "typingSent": [f["conversation_id"] for f in self.sent("typing")],
            "deleted": self.deleted, "tombstones": self.tombstones,
        }

    def check(self, expect: dict[str, Any], note: str) -> None:
        observed = self.observed()
        for key in set(expect) & set(observed):
            assert observed[key] == expect[key], f"{key} {note}"
        for message_id, state in expect.get("states", {}).items():
            assert self.states.get(message_id) == state, f"state of {message_id} {note}"
        for conversation_id, have in expect.get("have", {}).items():
            assert self.core.inbox.have(conversation_id) == have, f"have {conversation_id} {note}"
        for conversation_id, people in expect.get("typing", {}).items():
            assert self.core.typing.who(conversation_id) == people, f"typing in {conversation_id} {note}"
        assert set(expect) <= {*observed, "states", "have", "typing"}, f"unknown expectation {note}"


def fill(frame: Frame) -> Frame:
    """A frame as the server sends it: a `message` with its defaults, a `sent` with its time."""
    if frame["type"] == "message":
        return fill_message(frame)
    if frame["type"] in ("sent", "group", "group_changed"):
        return {"time": frame.get("seq"), **frame}
    return frame


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
