"""Typed requests: each client frame's fields, checked before any handler runs.

A bad field raises InvalidFieldError naming it; nothing has been stored at that point.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from chalicelib.errors import InvalidFieldError, TextTooLongError, UnsupportedMediaTypeError
from chalicelib.principal import KINDS, Identity, valid_id
from chalicelib.storage.groups import decode_roster_cursor

MAX_TEXT_CHARS = 4000  # code points; at most 4 UTF-8 bytes each, so a text is at most 16,000 bytes
MAX_PAGE = 200
MAX_SYNC_CONVERSATIONS = 100
# After json.loads a valid surrogate pair is one character: any surrogate left is a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_lone_surrogates(value: object) -> None:
    """Every string (and key) must be valid Unicode. JSON can escape a lone surrogate
    ("\\ud800"), which no UTF-8 encoder, store or client accepts: refused here, naming the
    top-level field it is in. Iterative, so a deeply nested value costs no recursion."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        field, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidFieldError(f"'{field or 'body'}' is not valid Unicode (a lone surrogate)")
        elif isinstance(item, dict):
            for key, child in item.items():  # JSON keys are strings
                if _SURROGATE.search(key):
                    raise InvalidFieldError(f"a key in '{field or 'body'}' is not valid Unicode (a lone surrogate)")
                stack.append((field or key, child))
        elif isinstance(item, list):
            stack.extend((field, child) for child in item)


def _str(frame: dict[str, Any], name: str, max_len: int = 128, required: bool = True) -> str | None:
    value = frame.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_len or not value.isprintable():
        raise InvalidFieldError(f"'{name}' must be a printable string of 1 to {max_len} characters")
    return value


def _int(frame: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = frame.get(name)
    if value is None:  # null is the same as leaving the field out
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidFieldError(f"'{name}' must be an integer from {low} to {high}")
    return value


def _identity(value: object, name: str) -> Identity:
    if not isinstance(value, dict) or value.get("kind") not in KINDS or not valid_id(value.get("id")):
        raise InvalidFieldError(f"'{name}' must be {{\"kind\": \"user\" | \"visitor\", \"id\": \"...\"}}")
    return Identity(value["kind"], value["id"])


@dataclass(frozen=True)
class SendRequest:
    """msg:R. Exactly one of `to` (a 1:1 peer) or `conversation_id`."""

    client_id: str
    text: str
    to: Identity | None
    conversation_id: str | None
    seq_hint: int
    image: ImageRequest | None = None  # a photo (§14.1); `text` is then its caption, maybe ""

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> SendRequest:
        client_id = _str(frame, "id")
        image = ImageRequest.parse(frame["image"]) if frame.get("image") is not None else None
        text = frame.get("text")
        if image is not None and (text is None or isinstance(text, str) and not text.strip()):
            text = ""  # a photo without a caption
        elif not isinstance(text, str) or not text.strip():
            raise InvalidFieldError("'text' must be a non-empty string")
        refuse_lone_surrogates({"text": text})
        if len(text) > MAX_TEXT_CHARS:
            raise TextTooLongError(f"'text' is at most {MAX_TEXT_CHARS} characters (Unicode code points)")
        has_to, has_conversation = frame.get("to") is not None, frame.get("conversation_id") is not None
        if has_to == has_conversation:
            raise InvalidFieldError("give exactly one of 'to' and 'conversation_id'")
        to = _identity(frame["to"], "to") if has_to else None
        conversation_id = _str(frame, "conversation_id") if has_conversation else None
        hint = _int(frame, "last_seq", 0, 2**53, default=0)
        assert client_id is not None
        return cls(client_id, text, to, conversation_id, hint, image)


# -- photos (protocol.md §14.1) -------------------------------------------------------------
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
MAX_IMAGE_SIDE = 16384
MAX_PREVIEW_CHARS = 4096
MAX_UPLOAD_SIZE = 2**53  # the server's own limit (`media_max_bytes`) is checked by logic/media.py
# u/<owner>/<random>: both parts 22 base64url characters (logic/media.py makes them)
UPLOAD_ID = re.compile(r"u/[A-Za-z0-9_-]{22}/[A-Za-z0-9_-]{22}")
_PREVIEW = re.compile(r"data:image/(jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+={0,2}")


def _content_type(frame: dict[str, Any]) -> str:
    value = frame.get("content_type")
    if not isinstance(value, str):
        raise InvalidFieldError("'content_type' must be a string")
    if value not in IMAGE_TYPES:
        raise UnsupportedMediaTypeError(f"'content_type' must be one of {', '.join(IMAGE_TYPES)}")
    return value


@dataclass(frozen=True)
class UploadRequest:
    """An upload slot for one photo of this type and exact size."""

    client_id: str
    content_type: str
    size: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> UploadRequest:
        return cls(_client_id(frame), _content_type(frame), _int(frame, "size", 1, MAX_UPLOAD_SIZE))


@dataclass(frozen=True)
class ImageRequest:
    """`send`'s `image`: which upload, what it declares it is, and an optional tiny preview."""

    upload_id: str
    content_type: str
    size: int
    width: int
    height: int
    preview: str | None

    @classmethod
    def parse(cls, value: object) -> ImageRequest:
        if not isinstance(value, dict):
            raise InvalidFieldError("'image' must be an object")
        upload_id = value.get("upload_id")
        if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
            raise InvalidFieldError("'image.upload_id' must be the upload_id of an 'upload' answer")
        preview = value.get("preview")
        if preview is not None and (not isinstance(preview, str) or len(preview) > MAX_PREVIEW_CHARS
                                    or not _PREVIEW.fullmatch(preview)):
            raise InvalidFieldError(f"'image.preview' must be a base64 image data URL of at most "
                                    f"{MAX_PREVIEW_CHARS} characters")
        return cls(upload_id, _content_type(value), _int(value, "size", 1, MAX_UPLOAD_SIZE),
                   _int(value, "width", 1, MAX_IMAGE_SIDE), _int(value, "height", 1, MAX_IMAGE_SIDE), preview)


@dataclass(frozen=True)
class MediaUrlRequest:
    """A fresh signed URL for the photo of message `seq`."""

    conversation_id: str
    seq: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> MediaUrlRequest:
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        return cls(conversation_id, _int(frame, "seq", 1, 2**53))


@dataclass(frozen=True)
class CursorRequest:
    """ack:R (cumulative: everything up to `seq` received) and the read mark."""

    conversation_id: str
    seq: int
    quiet: bool = False  # ack only: answer errors, not `acked` (one billed frame fewer, §6.3)

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> CursorRequest:
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        quiet = frame.get("quiet")
        if quiet is not None and not isinstance(quiet, bool):
            raise InvalidFieldError("'quiet' must be true or false")
        return cls(conversation_id, _int(frame, "seq", 1, 2**53), bool(quiet))


@dataclass(frozen=True)
class PingRequest:
    """The keepalive; `groups: true` also asks for the last seq of each group the caller is
    in (protocol.md §13.8: how a member learns of a group tail whose pushes were all lost)."""

    groups: bool

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> PingRequest:
        groups = frame.get("groups", False)
        if groups is None:
            groups = False
        if not isinstance(groups, bool):
            raise InvalidFieldError("'groups' must be true or false")
        return cls(groups)


@dataclass(frozen=True)
class SyncRequest:
    """Offline pull: messages after the server's acked cursor, or after `since[c]` if given."""

    since: dict[str, int]
    limit: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> SyncRequest:
        since = frame.get("since")
        since = {} if since is None else since
        if not isinstance(since, dict) or len(since) > MAX_SYNC_CONVERSATIONS:
            raise InvalidFieldError(f"'since' must map at most {MAX_SYNC_CONVERSATIONS} conversation ids to seqs")
        for key, value in since.items():
            if not valid_id(key) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidFieldError("'since' must map conversation ids to seqs (integers >= 0)")
        return cls(dict(since), _int(frame, "limit", 1, MAX_PAGE, default=100))


@dataclass(frozen=True)
class HistoryRequest:
    """Paging backwards: up to `limit` messages before seq `before` (default: the newest)."""

    conversation_id: str
    before: int | None
    limit: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> HistoryRequest:
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        before = _int(frame, "before", 1, 2**53) if frame.get("before") is not None else None
        return cls(conversation_id, before, _int(frame, "limit", 1, MAX_PAGE, default=50))


MAX_CONVERSATIONS_PAGE = 100
_MAX_CURSOR_CHARS = 512


@dataclass(frozen=True)
class ConversationsRequest:
    """A page of the conversation list: `limit` entries after the opaque `cursor` of the last page.

    The cursor names a position (last message time, conversation id) in the caller's own list
    only: whatever it holds, the server reads the caller's partition and nothing else."""

    limit: int
    after: tuple[int, str] | None
    hide_blocked: bool = False  # leave out the conversations whose peer the caller blocked (§15)

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> ConversationsRequest:
        limit = _int(frame, "limit", 1, MAX_CONVERSATIONS_PAGE, default=50)
        cursor = _str(frame, "cursor", max_len=_MAX_CURSOR_CHARS, required=False)
        hide = frame.get("hide_blocked")
        if hide is not None and not isinstance(hide, bool):
            raise InvalidFieldError("'hide_blocked' must be true or false")
        return cls(limit, None if cursor is None else decode_conversations_cursor(cursor), bool(hide))


def encode_conversations_cursor(last_time: int, conversation_id: str) -> str:
    raw = json.dumps([last_time, conversation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_conversations_cursor(cursor: str) -> tuple[int, str]:
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        position = None
    if (not isinstance(position, list) or len(position) != 2 or isinstance(position[0], bool)
            or not isinstance(position[0], int) or not 0 <= position[0] <= 2**53 or not valid_id(position[1])):
        raise InvalidFieldError("'cursor' must be the cursor of a previous 'conversations' answer")
    return position[0], position[1]


@dataclass(frozen=True)
class Release:
    """What a long-poll client has: mailbox numbers up to `cursor` (`base`: of its last poll
    answer); a poll, or a send that carries them, releases those frames."""

    cursor: int
    base: int

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Release:
        base = _int(values, "base", 1, 2**53, default=1)
        return cls(_int(values, "cursor", 0, 2**53, default=base - 1), base)

    @classmethod
    def from_query(cls, params: Mapping[str, str] | None) -> Release | None:
        """`lp/send?cursor=..&base=..`: both numbers, or neither (nothing released)."""
        if not params or ("cursor" not in params and "base" not in params):
            return None
        numbers: dict[str, Any] = {}
        for name in ("cursor", "base"):
            text = params.get(name, "")
            if not text.isdigit() or len(text) > 16:
                raise InvalidFieldError(f"'{name}' must be a whole number")
            numbers[name] = int(text)
        return cls.parse(numbers)


@dataclass(frozen=True)
class PollRequest:
    """A long-poll poll (version 4: answered at once, the wait is at `wait_url`): release
    mailbox frames up to `cursor` (given the `base` last seen)."""

    connection_id: str
    release: Release

    @classmethod
    def parse(cls, body: dict[str, Any]) -> PollRequest:
        connection_id = _str(body, "connection_id")
        assert connection_id is not None
        wait = body.get("wait")
        if wait is not None and (isinstance(wait, bool) or wait != 0):
            raise InvalidFieldError("'wait' must be 0 or absent: a poll answers at once (wait at wait_url)")
        return cls(connection_id, Release.parse(body))


def parse_identities(body: dict[str, Any], limit: int) -> list[Identity]:
    """A batch of identities (presence pull): 1 to `limit` of them."""
    values = body.get("identities")
    if not isinstance(values, list) or not 0 < len(values) <= limit:
        raise InvalidFieldError(f"'identities' must be a list of 1 to {limit} identities")
    return [_identity(value, "identities[]") for value in values]


# -- groups (protocol.md §13) ---------------------------------------------------------------
MAX_TITLE_CHARS = 100
MAX_GROUP_FRAME_MEMBERS = 20
GROUP_ROLES = ("owner", "admin", "member")


def _group_id(frame: dict[str, Any]) -> str:
    value = _str(frame, "conversation_id")
    assert value is not None
    if not value.startswith("g_"):
        raise InvalidFieldError("'conversation_id' must be a group's id (g_...)")
    return value


def _title(frame: dict[str, Any]) -> str:
    value = frame.get("title")
    if (not isinstance(value, str) or not 0 < len(value) <= MAX_TITLE_CHARS or not value.isprintable()
            or value.isspace()):
        raise InvalidFieldError(f"'title' must be 1 to {MAX_TITLE_CHARS} printable characters, not only spaces")
    return value


def _members(frame: dict[str, Any], low: int) -> list[Identity]:
    """`members`: low..20 identities, duplicates dropped (first kept)."""
    values = frame.get("members")
    if values is None and low == 0:
        values = []
    if not isinstance(values, list) or not low <= len(values) <= MAX_GROUP_FRAME_MEMBERS:
        raise InvalidFieldError(f"'members' must be a list of {low} to {MAX_GROUP_FRAME_MEMBERS} identities")
    return list(dict.fromkeys(_identity(value, "members[]") for value in values))


def _role(frame: dict[str, Any], allowed: tuple[str, ...], default: str | None = None) -> str:
    value = frame.get("role")
    if value is None:
        value = default
    if value not in allowed:
        raise InvalidFieldError(f"'role' must be one of {', '.join(allowed)}")
    assert isinstance(value, str)
    return value


def _roster_cursor(frame: dict[str, Any]) -> str | None:
    cursor = _str(frame, "cursor", max_len=_MAX_CURSOR_CHARS, required=False)
    if cursor is None:
        return None
    after = decode_roster_cursor(cursor)
    if after is None:
        raise InvalidFieldError("'cursor' must be the cursor of a previous answer")
    return after


def _client_id(frame: dict[str, Any]) -> str:
    value = _str(frame, "id")
    assert value is not None
    return value


@dataclass(frozen=True)
class GroupCreateRequest:
    client_id: str
    title: str
    members: list[Identity]  # the others, 0-20 (the creator is added as owner)

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupCreateRequest:
        return cls(_client_id(frame), _title(frame), _members(frame, 0))


@dataclass(frozen=True)
class GroupAddRequest:
    client_id: str
    conversation_id: str
    members: list[Identity]
    role: str  # "member" or "admin"

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupAddRequest:
        return cls(_client_id(frame), _group_id(frame), _members(frame, 1),
                   _role(frame, ("member", "admin"), default="member"))


@dataclass(frozen=True)
class GroupRemoveRequest:
    client_id: str
    conversation_id: str
    member: Identity

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupRemoveRequest:
        return cls(_client_id(frame), _group_id(frame), _identity(frame.get("member"), "member"))


@dataclass(frozen=True)
class GroupLeaveRequest:
    client_id: str
    conversation_id: str

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupLeaveRequest:
        return cls(_client_id(frame), _group_id(frame))


@dataclass(frozen=True)
class GroupRenameRequest:
    client_id: str
    conversation_id: str
    title: str

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupRenameRequest:
        return cls(_client_id(frame), _group_id(frame), _title(frame))


@dataclass(frozen=True)
class GroupRoleRequest:
    client_id: str
    conversation_id: str
    member: Identity
    role: str  # "owner" hands ownership on

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupRoleRequest:
        return cls(_client_id(frame), _group_id(frame), _identity(frame.get("member"), "member"),
                   _role(frame, GROUP_ROLES))


@dataclass(frozen=True)
class GroupMembersRequest:
    conversation_id: str
    after: str | None  # the identity key the cursor names
    limit: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> GroupMembersRequest:
        return cls(_group_id(frame), _roster_cursor(frame), _int(frame, "limit", 1, MAX_PAGE, default=100))


@dataclass(frozen=True)
class ReceiptsRequest:
    conversation_id: str
    seq: int
    after: str | None
    limit: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> ReceiptsRequest:
        return cls(_group_id(frame), _int(frame, "seq", 1, 2**53), _roster_cursor(frame),
                   _int(frame, "limit", 1, MAX_PAGE, default=100))


# -- typing and settings (protocol.md §14.2, §14.3) ------------------------------------------
@dataclass(frozen=True)
class ConversationRequest:
    """A request naming one conversation and nothing else."""

    conversation_id: str

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> Self:
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        return cls(conversation_id)


class TypingRequest(ConversationRequest):
    """The sender is typing in a conversation (1:1 or group): ephemeral, never stored."""


class BlockRequest(ConversationRequest):
    """Block or unblock the peer of one of the caller's 1:1 conversations (protocol.md §15)."""


REPORT_REASONS = ("spam", "abuse", "scam", "other")
MAX_NOTE_CHARS = 1000
# a note may span lines; any other control character is refused
_NOTE_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ReportRequest:
    """Report message `seq` of a conversation, or the whole conversation (`seq` None), with a
    reason and an optional note (protocol.md §17). `client_id` makes it idempotent."""

    client_id: str
    conversation_id: str
    seq: int | None
    reason: str
    note: str

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> ReportRequest:
        client_id = _client_id(frame)
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        seq = _int(frame, "seq", 1, 2**53) if frame.get("seq") is not None else None
        reason = frame.get("reason")
        if reason not in REPORT_REASONS:
            raise InvalidFieldError(f"'reason' must be one of {', '.join(REPORT_REASONS)}")
        note = frame.get("note")
        note = "" if note is None else note
        if not isinstance(note, str) or _NOTE_CONTROL.search(note):
            raise InvalidFieldError("'note' must be a string without control characters (new lines allowed)")
        if len(note) > MAX_NOTE_CHARS:
            raise TextTooLongError(f"'note' is at most {MAX_NOTE_CHARS} characters (Unicode code points)")
        return cls(client_id, conversation_id, seq, str(reason), note)


@dataclass(frozen=True)
class DeleteRequest:
    """Delete message `seq` of a conversation for everyone (protocol.md §16)."""

    conversation_id: str
    seq: int

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> DeleteRequest:
        conversation_id = _str(frame, "conversation_id")
        assert conversation_id is not None
        return cls(conversation_id, _int(frame, "seq", 1, 2**53))


@dataclass(frozen=True)
class SettingsRequest:
    """Read the caller's settings, after changing the ones given (`read_receipts`, optional)."""

    read_receipts: bool | None

    @classmethod
    def parse(cls, frame: dict[str, Any]) -> SettingsRequest:
        value = frame.get("read_receipts")
        if value is not None and not isinstance(value, bool):
            raise InvalidFieldError("'read_receipts' must be true or false")
        return cls(value)


# -- operator tools (docs/operator.md) -----------------------------------------------------------
MAX_BAN_REASON_CHARS = 500


@dataclass(frozen=True)
class BanRequest:
    """An operator's ban or unban of one identity, with an optional reason (what the list shows)."""

    identity: Identity
    reason: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> BanRequest:
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_BAN_REASON_CHARS or (reason and not reason.isprintable()):
            raise InvalidFieldError(f"'reason' must be printable text of at most {MAX_BAN_REASON_CHARS} characters")
        return cls(_identity(body.get("identity"), "identity"), reason)
