"""The long poll's rings (docs/protocol.md §2b, version 4): what a wait answer and a poll answer
mean for a client, as a small pure object the transport feeds, so both clients can be checked
against the same cases (tests/long_poll_rings/*.json; frontend/lib/rings.js is the JS twin).

A wait answer is SQS's ReceiveMessage answer: the rings are the `Body` strings of its messages,
each `{"n": 7, "f": "<frame as JSON text>"}` (frame 7 with its copy) or `{"n": 7}` (no copy: poll).
Rings come twice and out of order: `next` is the number expected; a ring below it, or held
already, is dropped; copies are handed out in number order from `next` on. A gap, a ring without
a copy or anything unreadable asks for a poll, which returns every frame still waiting.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


@dataclass(frozen=True)
class Taken:
    """What an answer gave: frames to process now, in order; and whether to poll now."""

    frames: list[Frame] = field(default_factory=list)
    poll: bool = False


def ring_bodies(answer: Any) -> list[Any] | None:
    """The `Body` of each message of a wait answer (API Gateway's SQS ReceiveMessage answer, or
    a top-level `Messages` list); None when the answer is not one (poll)."""
    if not isinstance(answer, dict):
        return None
    result = answer.get("ReceiveMessageResponse", {}).get("ReceiveMessageResult") \
        if isinstance(answer.get("ReceiveMessageResponse"), dict) else None
    messages = result.get("messages", result.get("Messages")) if isinstance(result, dict) else answer.get("Messages")
    if messages is None:
        return []  # null or absent: none
    if not isinstance(messages, list):
        return None
    return [message.get("Body") if isinstance(message, dict) else None for message in messages]


def _json(text: Any) -> Any:
    """The JSON in `text`, or None when it is not a string of JSON."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_ring(body: Any) -> tuple[int, Frame | None] | None:
    """(number, frame or None for no copy), or None for anything else (poll)."""
    ring = _json(body)
    number = ring.get("n") if isinstance(ring, dict) else None
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        return None
    frame = _json(ring.get("f"))  # no copy, or a broken one: poll for the frame
    return number, frame if isinstance(frame, dict) else None


class Rings:
    """One long-poll connection's numbers: `next` (the frame expected), the rings held above
    it, and how far the server has been told to release (`owes`: processed frames not yet
    released by a poll or a send that carried `cursor`)."""

    def __init__(self, next_number: int) -> None:
        self.next = next_number
        self._held: dict[int, Frame | None] = {}
        self._released = next_number - 1

    @property
    def processed(self) -> int:
        """The `cursor` to send: the number of the last frame handed out."""
        return self.next - 1

    @property
    def owes(self) -> bool:
        return self.processed > self._released

    def released(self, cursor: int) -> None:
        """A poll or send carrying `cursor` was answered: the server released up to it."""
        self._released = max(self._released, cursor)

    def waited(self, answer: Any) -> Taken:
        """A wait answered 200 with `answer` (its JSON; None if it was none)."""
        bodies = ring_bodies(answer)
        unreadable = bodies is None
        for body in bodies or []:
            ring = parse_ring(body)
            if ring is None:
                unreadable = True
            elif ring[0] >= self.next and ring[0] not in self._held:
                self._held[ring[0]] = ring[1]
        frames = self._drain()
        # anything still held is a gap or a ring without its copy: the poll returns them all
        return Taken(frames, unreadable or bool(self._held))

    def polled(self, base: int, frames: list[Frame]) -> Taken:
        """A poll answered: `frames` are numbered `base`, `base + 1`, ... Never asks for another
        poll at once: a gap it leaves (rings of frames stored after the poll read) is filled by
        the next wait, and checked again at its answer."""
        out: list[Frame] = []
        for number, frame in enumerate(frames, start=base):
            if number >= self.next:
                out.append(frame)
                self.next = number + 1
        self._held = {number: frame for number, frame in self._held.items() if number >= self.next}
        out.extend(self._drain())
        return Taken(out, False)

    def _drain(self) -> list[Frame]:
        out: list[Frame] = []
        while self._held.get(self.next) is not None:
            frame = self._held.pop(self.next)
            assert frame is not None
            out.append(frame)
            self.next += 1
        return out
