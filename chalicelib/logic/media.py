"""Photos (docs/protocol.md §14.1): upload slots, checking an upload before a message uses it,
and signed URLs for those allowed to see it.

    C->S upload {content_type, size}  -> a presigned POST for one key, that type, that exact
                                         size and the tag webim=pending (no call: signed here)
    browser --POST--> S3              (no bytes through Lambda)
    C->S send {image: {upload_id...}} -> the caller's key; its copy if it has one (a list of
                                         one key), else a server-side copy to a key no form
                                         can name, born attached, with the declared type; the
                                         copy's size and magic bytes checked (one ranged
                                         GetObject: what is checked is what is kept); the
                                         upload deleted; then the message stored (messaging.py)
    message frames                    -> image.url: a GET signed for `media_url_seconds`, with
                                         response-content-type the checked type

An upload id is the object key `u/<owner>/<random>`: <owner> is derived from the identity
(base64url of its key's SHA-256, 22 characters), so ownership is a comparison, no read. Its
copy is `m/<owner>/<random>/<nonce>`, a key no POST form names (each form pins its own `u/`
key exactly, and stays valid `slot_seconds`: it can neither write nor re-tag a copy), with a
fresh nonce per copy, so a copy is written once and never overwritten, even by two racing sends.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import (
    NotFoundError,
    NotMemberError,
    UploadMismatchError,
    UploadNotFoundError,
    UploadTooLargeError,
)
from chalicelib.logic.frames import ImageRequest, MediaUrlRequest, UploadRequest
from chalicelib.logic.limits import Limits
from chalicelib.principal import Identity
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.media import ATTACHED_PREFIX, UPLOAD_PREFIX, MediaBucket, StoredImage
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import MessagesTable

Frame = dict[str, Any]
OWNER_CHARS = 22
REPORT_PREFIX = "r/"  # a reported photo's own copy: r/<report id>/<seq> (logic/reports.py)


def owner_part(identity: Identity) -> str:
    """The upload-key part that names its owner: fixed length, URL- and key-safe."""
    digest = hashlib.sha256(identity.key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode()[:OWNER_CHARS]


def new_upload_id(identity: Identity) -> str:
    return f"{UPLOAD_PREFIX}{owner_part(identity)}/{secrets.token_urlsafe(16)}"  # 16 bytes: 22 characters


def owned_by(upload_id: str, identity: Identity) -> bool:
    parts = upload_id.split("/")
    return (len(parts) == 3 and parts[0] + "/" == UPLOAD_PREFIX
            and secrets.compare_digest(parts[1], owner_part(identity)))


def copies_of(upload_id: str) -> str:
    """The prefix of an upload's attached copies: under m/, which no POST form names."""
    return ATTACHED_PREFIX + upload_id.removeprefix(UPLOAD_PREFIX) + "/"


def magic_matches(content_type: str, first: bytes) -> bool:
    """The file starts as its declared format does (a browser-declared type proves nothing)."""
    if content_type == "image/jpeg":
        return first.startswith(b"\xff\xd8\xff")
    if content_type == "image/png":
        return first.startswith(b"\x89PNG\r\n\x1a\n")
    if content_type == "image/gif":
        return first[:6] in (b"GIF87a", b"GIF89a")
    if content_type == "image/webp":
        return first[:4] == b"RIFF" and first[8:12] == b"WEBP"
    return False


@dataclass(frozen=True)
class PhotoTerms:
    """A photo's largest size, how long a signed GET URL and an upload slot stay valid."""

    max_bytes: int
    url_seconds: int
    slot_seconds: int


class Media:
    def __init__(self, bucket: MediaBucket, messages: MessagesTable, members: MembersTable, terms: PhotoTerms,
                 limits: Limits | None = None, clock: Callable[[], float] = time.time) -> None:
        self._bucket = bucket
        self._messages = messages
        self._members = members
        self._max_bytes = terms.max_bytes
        self._url_seconds = terms.url_seconds
        self._slot_seconds = terms.slot_seconds
        self._limits = limits
        self._clock = clock

    # -- the upload slot ---------------------------------------------------------------------
    def upload(self, identity: Identity, request: UploadRequest) -> Frame:
        self._check_size(request.size)
        if self._limits is not None:
            self._limits.upload(identity)
        upload_id = new_upload_id(identity)
        post = self._bucket.presigned_post(upload_id, request.content_type, request.size, self._slot_seconds)
        return {"type": "upload", "ref": request.client_id, "upload_id": upload_id, "url": post.url,
                "fields": dict(post.fields), "max_bytes": self._max_bytes,
                "expires_at": int((self._clock() + self._slot_seconds) * 1000)}

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise UploadTooLargeError(f"a photo is at most {self._max_bytes} bytes")

    # -- before a message uses it ------------------------------------------------------------
    def attach(self, sender: Identity, image: ImageRequest) -> StoredImage:
        """The key of the sender's photo, checked to be what `image` declares, and what the
        message stores. The first send of an upload copies it to a key of its own (born
        pending, with the declared type; `confirm` tags it attached once the message is
        stored), checks the copy (what is checked is what is kept)
        and deletes the upload; every later send of that upload id (a retry after a lost
        `sent`, or the photo sent again) finds that copy and never looks at the slot again:
        whatever is posted to it afterwards reaches no message. A refusal leaves no new object.

        Crash-safe: a death after the copy leaves it for the retry to find (and check); after
        the delete, the retry finds the copy; a call run twice copies the same bytes to the
        same key, or deletes a deleted key."""
        self._check_size(image.size)
        if not owned_by(image.upload_id, sender):
            raise UploadNotFoundError("no such upload")  # someone else's is never revealed
        copies = copies_of(image.upload_id)
        key = self._bucket.first_under(copies)
        if key is None:
            fresh = copies + secrets.token_urlsafe(16)
            if self._bucket.copy_pending(image.upload_id, fresh, image.content_type):
                try:
                    self._check(fresh, image)
                except UploadMismatchError:
                    self._bucket.delete(fresh)  # just made: no message points at it
                    raise
                self._bucket.delete(image.upload_id)  # no longer needed (else the lifecycle expires it)
                return self._stored(fresh, image)
            key = self._bucket.first_under(copies)  # a racing send of it may have copied it meanwhile
            if key is None:
                raise UploadNotFoundError("no such upload (never uploaded, or expired)")
        self._check(key, image)  # a refusal keeps it: a message may point at it
        return self._stored(key, image)

    def confirm(self, stored: StoredImage) -> None:
        """The message pointing at this photo is stored: tag the copy attached, so the
        lifecycle rule that expires unused uploads keeps it. Until then it is pending: the copy
        of a send that was refused (rate limited, not a member) and never retried expires in a
        day. A failure here reaches the sender as `internal_error` (no `sent` yet): its retry
        finds the message stored and confirms again."""
        self._bucket.mark_attached(stored.key)

    def discard(self, key: str) -> None:
        """A deleted message's photo (protocol.md §16): its object goes (idempotent)."""
        self._bucket.delete(key)

    @staticmethod
    def _stored(key: str, image: ImageRequest) -> StoredImage:
        """What the message stores of its photo."""
        return StoredImage(key, image.content_type, image.size, image.width, image.height, image.preview)

    def _check(self, key: str, image: ImageRequest) -> None:
        """The object is the declared type and size, and starts as that format does."""
        start = self._bucket.start_of(key)
        if start is None:
            raise UploadNotFoundError("no such upload (never uploaded, or expired)")
        if start.content_type != image.content_type or start.size != image.size:
            raise UploadMismatchError("the upload's type or size is not the one declared")
        if not magic_matches(image.content_type, start.first_bytes):
            raise UploadMismatchError(f"the upload is not a {image.content_type} file")

    # -- a reported photo (protocol.md §17) ----------------------------------------------------
    def keep_copy(self, stored: StoredImage, key: str) -> bool:
        """A server-side copy of a message's photo at `key` (r/..., a report's own), born
        pending (expires in a day unless `kept`), so it outlives the message's copy, which a
        delete (§16) or the retention removes. False when the photo is already gone."""
        if not key.startswith(REPORT_PREFIX):
            raise ValueError(f"a report's copy lives under {REPORT_PREFIX}, not at {key!r}")
        return self._bucket.copy_pending(stored.key, key, stored.content_type)

    def kept(self, key: str) -> None:
        """The report holding the copy is stored: the lifecycle no longer expires it."""
        self._bucket.mark_attached(key)

    def report_closed(self, key: str, closed: bool, content_type: str) -> bool:
        """The report holding the copy was closed under a retention (its rule expires the copy,
        counted from the close) or reopened (kept again): storage/media.py mark_report_closed.
        False: the copy is gone."""
        return self._bucket.mark_report_closed(key, closed, content_type)

    # -- signed URLs -------------------------------------------------------------------------
    def image_frame(self, stored: StoredImage) -> Frame:
        """A message frame's `image`: a fresh signed URL (local computation), never the key."""
        url, expires = self._sign(stored.key, stored.content_type)
        frame: Frame = {"url": url, "url_expires": expires, "content_type": stored.content_type,
                        "size": stored.size, "width": stored.width, "height": stored.height}
        if stored.preview:
            frame["preview"] = stored.preview
        return frame

    def _sign(self, key: str, content_type: str) -> tuple[str, int]:
        """Signed with the checked type as response-content-type: served as that type whatever
        the object's metadata says (a photo stored before copies existed kept its form's type)."""
        expires = int((self._clock() + self._url_seconds) * 1000)
        return self._bucket.presigned_get(key, self._url_seconds, content_type), expires

    def media_url(self, member: Identity, request: MediaUrlRequest) -> Frame:
        """A new URL for the photo of one message, for a member who may see that message."""
        conversation_id, seq = request.conversation_id, request.seq
        membership = self._members.get(member, conversation_id)
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        if is_group_id(conversation_id) and seq < membership.joined_seq:
            raise NotMemberError("this message is from before you joined")
        message = self._messages.get(conversation_id, seq)
        if message is None or message.image is None:
            raise NotFoundError("no photo message with this seq")
        url, expires = self._sign(message.image.key, message.image.content_type)
        return {"type": "media_url", "conversation_id": conversation_id, "seq": seq, "url": url,
                "url_expires": expires}
