"""The services on moto for typing and seen tests (protocol.md §14.2, §14.3): connections on
either transport (WebSocket pushes recorded, long-poll frames polled from the mailbox), the
jobs the app enqueued (run when a test chooses), and the rate-limit clock moved by hand."""
from __future__ import annotations

import itertools
import json
import time
from typing import Any

import boto3

from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.logic.frames import Release, SendRequest
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

Frame = dict[str, Any]
TRANSPORTS = ["ws", "lp"]
_ids = itertools.count()


class Clock:
    """The limits' (and typing's) clock, moved by hand: never a sleep."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, env: dict[str, str], handshake_grace: int = 0) -> None:
        self.env = env
        self.clock = Clock()
        log = CallLog()
        session = counted_session(log)
        self.jobs: list[Frame] = []
        session.events.register("provide-client-params.sqs.SendMessage",
                                lambda params, **_: self.jobs.append(json.loads(params["MessageBody"])))
        sender = LoggedSender(log)
        services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": str(handshake_grace)}, session=session,
                                     sender=sender,
                                     limits_clock=self.clock)
        self.h = Harness(services, sender, log)
        self._identity: dict[str, Identity] = {}
        self._polled: dict[str, list[Frame]] = {}
        self._cursor: dict[str, tuple[int, int]] = {}  # long poll: (cursor, base)
        dynamodb = boto3.resource("dynamodb")
        self.messages = dynamodb.Table(env["MESSAGES_TABLE"])
        self.members = dynamodb.Table(env["MEMBERS_TABLE"])

    @property
    def services(self) -> Services:
        return self.h.services

    def connect(self, transport: str, identity: Identity, name: str | None = None) -> str:
        """A live connection of `identity` on `transport`; returns its id."""
        if transport == "ws":
            connection = name or f"ws-{next(_ids)}"
            self.h.connect(connection, identity)
        else:
            connection = self.services.long_poll.open(identity)["connection_id"]
            self._polled[connection], self._cursor[connection] = [], (0, 1)
        self._identity[connection] = identity
        self.received(connection)  # a poll: the long-poll connection is live (presence)
        return connection

    def frame(self, connection: str, **frame: Any) -> list[Frame]:
        """Send a client frame; returns its answers (none for a `typing` that is accepted)."""
        if connection in self._polled:
            return self.services.long_poll.send(self._identity[connection], connection, json.dumps(frame))
        before = len(self.h.sender.sent)
        self.h.frame(connection, **frame)
        return [json.loads(data) for cid, data in self.h.sender.sent[before:] if cid == connection]

    def ask(self, connection: str, **frame: Any) -> Frame:
        """A frame with an id, and its one answer."""
        ref = f"r{next(_ids)}"
        answers = [f for f in self.frame(connection, id=ref, **frame) if f.get("ref") == ref]
        assert len(answers) == 1, answers
        return answers[0]

    def received(self, connection: str, kind: str | None = None) -> list[Frame]:
        """Every frame pushed to the connection so far (answers on WebSocket included)."""
        if connection in self._polled:
            cursor, base = self._cursor[connection]
            answer = self.services.long_poll.poll(self._identity[connection], connection, Release(cursor, base))
            self._polled[connection] += answer["frames"]
            self._cursor[connection] = (answer["cursor"], answer["base"])
            frames = self._polled[connection]
        else:
            frames = self.h.frames_to(connection)
        return [f for f in frames if kind is None or f.get("type") == kind]

    def wrote_to(self, adder: Identity, *writers: Identity) -> None:
        """Each writer sends `adder` one 1:1 message (the real send path, no connection): what
        lets the adder put it in a group (protocol.md §13.2)."""
        for writer in writers:
            request = SendRequest.parse({"id": f"hi-{next(_ids)}", "text": "hi", "to": adder.to_json()})
            assert self.services.messaging.send(writer, request)["type"] == "sent"

    def run_fanouts(self) -> int:
        """Run the group fan-out jobs queued so far and the ones they queue; returns how many ran."""
        ran = 0
        while pending := [j for j in self.jobs if j.get("kind") == GROUP_FANOUT]:
            self.jobs[:] = [j for j in self.jobs if j.get("kind") != GROUP_FANOUT]
            for job in pending:
                self.services.jobs.run(json.dumps(job))
                ran += 1
        return ran

    def stored(self) -> tuple[list[Frame], list[Frame]]:
        """Both tables, whole (test-only scans): messages and heads; memberships and settings."""
        def scan(table: Any) -> list[Frame]:
            return sorted(table.scan(ConsistentRead=True)["Items"], key=lambda i: (str(i["pk"]), str(i["sk"])))
        return scan(self.messages), scan(self.members)
