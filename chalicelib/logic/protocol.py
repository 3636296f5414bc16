"""The protocol core: one dispatch table from a client frame's `action` to its handler.

It knows no transport: it takes the text of one client frame and returns the frames that
answer it. WebSocket and long poll both feed it (docs/protocol.md describes the frames).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import (
    FrameTooLargeError,
    InvalidFieldError,
    MalformedJsonError,
    UnknownActionError,
    WebimError,
)
from chalicelib.logic.frames import (
    BlockRequest,
    ConversationsRequest,
    CursorRequest,
    DeleteRequest,
    GroupAddRequest,
    GroupCreateRequest,
    GroupLeaveRequest,
    GroupMembersRequest,
    GroupRemoveRequest,
    GroupRenameRequest,
    GroupRoleRequest,
    HistoryRequest,
    MediaUrlRequest,
    PingRequest,
    ReceiptsRequest,
    ReportRequest,
    SendRequest,
    SettingsRequest,
    SyncRequest,
    TypingRequest,
    UploadRequest,
    refuse_lone_surrogates,
)
from chalicelib.logic.groups import Groups
from chalicelib.logic.media import Media
from chalicelib.logic.messaging import Messaging
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.reports import Reports
from chalicelib.logic.typing_signal import TypingSignals
from chalicelib.principal import Identity
from chalicelib.storage.connections import ConnectionRecord

PROTOCOL_VERSION = 4  # 2: groups (docs/protocol.md §13); 3: photos, typing, seen (§14); 4: the wait (§2b)
# An oversized frame is still read for its `id` (so the error carries `ref`) up to this size:
# the largest WebSocket message (API Gateway and the local stack close the connection beyond).
MAX_READ_FOR_REF_BYTES = 128 * 1024

Frame = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who sent a frame, as established when the connection opened (never from the frame)."""

    connection: ConnectionRecord

    @property
    def identity(self) -> Identity:
        return self.connection.identity


Handler = Callable[[Caller, Frame], list[Frame]]


class ProtocolCore:
    def __init__(self, max_frame_bytes: int, messaging: Messaging | None = None,
                 clock: Callable[[], float] = time.time, presence: PresenceService | None = None,
                 groups: Groups | None = None, typing: TypingSignals | None = None,
                 media: Media | None = None) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._clock = clock
        self._presence = presence
        self._messaging = messaging
        self._handlers: dict[str, Handler] = {"ping": self._ping}
        if messaging is not None:
            self._handlers.update(_messaging_handlers(messaging))
        if groups is not None:
            self._handlers.update(_group_handlers(groups))
        if media is not None:  # photos (§14.1): the upload slot and a fresh URL
            self._handlers["upload"] = lambda c, f: [media.upload(c.identity, UploadRequest.parse(f))]
            self._handlers["media_url"] = lambda c, f: [media.media_url(c.identity, MediaUrlRequest.parse(f))]
        if typing is not None:
            # no answer unless refused; the group fan-out skips the sending connection
            self._handlers["typing"] = lambda c, f: typing.typing(c.identity, TypingRequest.parse(f),
                                                                   c.connection.connection_id)

    def add_reports(self, reports: Reports) -> None:
        """Serve `report` (§17)."""
        self._handlers["report"] = lambda c, f: [reports.report(c.identity, ReportRequest.parse(f))]

    def handle_text(self, caller: Caller, text: str) -> list[Frame]:
        """Answer one client frame; bad input becomes an error frame, never an exception."""
        ref: str | None = None
        try:
            # surrogatepass: a body that was not valid UTF-8 (long poll) still has a size
            size = len(text.encode("utf-8", errors="surrogatepass"))
            if size > self._max_frame_bytes:
                ref = frame_id(text) if size <= MAX_READ_FOR_REF_BYTES else None
                raise FrameTooLargeError(f"a frame is at most {self._max_frame_bytes} bytes")
            frame = _parse(text)
            ref = _optional_str(frame, "id")
            action = frame.get("action")
            if not isinstance(action, str):
                raise InvalidFieldError("'action' must be a string", ref)
            handler = self._handlers.get(action)
            if handler is None:
                raise UnknownActionError(f"unknown action {action!r}", ref)
            refuse_lone_surrogates(frame)
            replies = handler(caller, frame)
        except WebimError as error:
            if error.ref is None:
                error.ref = ref
            return [error.to_frame()]
        if ref is not None:
            for reply in replies:
                reply.setdefault("ref", ref)
        return replies

    def _ping(self, caller: Caller, frame: Frame) -> list[Frame]:
        """The keepalive, and for a WebSocket connection its presence heartbeat; with
        `groups: true` also each of the caller's groups' last seq (§13.8), so a member that
        lost every push of a burst learns of it on its next keepalive, in the same invocation."""
        request = PingRequest.parse(frame)
        if self._presence is not None and caller.connection.transport == "ws":
            self._presence.heartbeat(caller.connection)
        pong = {"type": "pong", "v": PROTOCOL_VERSION, "time": int(self._clock() * 1000),
                "identity": caller.identity.to_json()}
        if request.groups and self._messaging is not None:
            pong["groups"] = self._messaging.pull.group_tails(caller.identity)
        return [pong]


def _messaging_handlers(messaging: Messaging) -> dict[str, Handler]:
    """The dispatch table's messaging part: action -> typed request -> one service call."""
    return {
        # the sending connection: a group's fan-out skips it (it has `sent`)
        "send": lambda c, f: [messaging.send(c.identity, SendRequest.parse(f), c.connection.connection_id)],
        "ack": lambda c, f: _ack(messaging, c.identity, CursorRequest.parse(f)),
        "read": lambda c, f: [messaging.read(c.identity, CursorRequest.parse(f))],
        "sync": lambda c, f: [messaging.pull.sync(c.identity, SyncRequest.parse(f))],
        "history": lambda c, f: [messaging.pull.history(c.identity, HistoryRequest.parse(f))],
        "conversations": lambda c, f: [messaging.conversation_list.page(c.identity, ConversationsRequest.parse(f))],
        "settings": lambda c, f: [messaging.settings(c.identity, SettingsRequest.parse(f))],
        "block": lambda c, f: [messaging.block(c.identity, BlockRequest.parse(f), on=True)],
        "unblock": lambda c, f: [messaging.block(c.identity, BlockRequest.parse(f), on=False)],
        # delete for everyone (§16); a group's fan-out of the tombstone skips the deleting connection
        "delete": lambda c, f: [messaging.deletion.delete(c.identity, DeleteRequest.parse(f),
                                                          c.connection.connection_id)],
    }


def _group_handlers(groups: Groups) -> dict[str, Handler]:
    """Group management (§13); a change's event is pushed to every member's connections except
    the one that sent the frame (it has the answer)."""
    return {
        "group_create": lambda c, f: [groups.create(c.identity, c.connection.connection_id,
                                                    GroupCreateRequest.parse(f))],
        "group_add": lambda c, f: [groups.add(c.identity, c.connection.connection_id, GroupAddRequest.parse(f))],
        "group_remove": lambda c, f: [groups.remove(c.identity, c.connection.connection_id,
                                                    GroupRemoveRequest.parse(f))],
        "group_leave": lambda c, f: [groups.leave(c.identity, c.connection.connection_id,
                                                  GroupLeaveRequest.parse(f))],
        "group_rename": lambda c, f: [groups.rename(c.identity, c.connection.connection_id,
                                                    GroupRenameRequest.parse(f))],
        "group_role": lambda c, f: [groups.set_role(c.identity, c.connection.connection_id,
                                                    GroupRoleRequest.parse(f))],
        "group_members": lambda c, f: [groups.members(c.identity, GroupMembersRequest.parse(f))],
        "receipts": lambda c, f: [groups.receipts(c.identity, ReceiptsRequest.parse(f))],
    }


def _ack(messaging: Messaging, identity: Identity, request: CursorRequest) -> list[Frame]:
    """ack:R; a quiet ack is answered only when refused (ack:A is one billed frame per message,
    and the acker learns nothing from it that its own ack did not say, protocol.md §6.3)."""
    answer = messaging.ack(identity, request)
    return [] if request.quiet else [answer]


def _parse(text: str) -> Frame:
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedJsonError("the frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise MalformedJsonError("a frame is a JSON object")
    return frame


def _optional_str(frame: Frame, field: str) -> str | None:
    value = frame.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isprintable():
        raise InvalidFieldError(f"'{field}' must be a printable string of 1 to 128 characters")
    return value


def frame_id(text: str) -> str | None:
    """The `id` of a client frame, if it has a valid one (for errors raised outside the core)."""
    try:
        frame = json.loads(text)
        return _optional_str(frame, "id") if isinstance(frame, dict) else None
    except (ValueError, RecursionError, WebimError):
        return None
