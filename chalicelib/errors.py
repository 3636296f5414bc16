"""The protocol's error tree: each class carries its stable code and HTTP status.

Codes are part of the protocol (docs/protocol.md) and never change meaning; the message is
for humans and may change.
"""
from __future__ import annotations

from typing import Any


class WebimError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str = "", ref: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.ref = ref  # the client id of the frame this error answers, when known

    def to_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            frame["ref"] = self.ref
        return frame


class DeliveryNotStarted(WebimError):
    """A message stored whose delivery could not be started (a group's fan-out job, a 1:1's
    ack check): answered `internal_error`, "outcome unknown", so the client sends the same
    frame again, and that repeat starts the delivery again (protocol.md §9a)."""


class BadRequestError(WebimError):
    code = "bad_request"
    status = 400


class MalformedJsonError(BadRequestError):
    code = "malformed_json"


class UnknownActionError(BadRequestError):
    code = "unknown_action"


class InvalidFieldError(BadRequestError):
    code = "invalid_field"


class FrameTooLargeError(BadRequestError):
    code = "frame_too_large"
    status = 413


class UnauthorizedError(WebimError):
    code = "unauthorized"
    status = 401


class ForbiddenError(WebimError):
    code = "forbidden"
    status = 403


class ConnectionGoneError(WebimError):
    """The push target no longer exists (API Gateway answered 410): a routing fact, not a bug."""

    code = "connection_gone"
    status = 410


class UnknownJobError(WebimError):
    """A queue message of a kind no handler knows: it fails so SQS redrives it to the DLQ."""

    code = "unknown_job"


class MissingCredentialError(UnauthorizedError):
    code = "missing_credential"


class InvalidCredentialError(UnauthorizedError):
    """Altered, forged, foreign, of a refused algorithm, or for another audience."""

    code = "invalid_credential"


class ExpiredCredentialError(UnauthorizedError):
    code = "expired_credential"


class DevLoginDisabledError(ForbiddenError):
    code = "dev_login_disabled"


class NotFoundError(WebimError):
    code = "not_found"
    status = 404


class ConflictError(WebimError):
    code = "conflict"
    status = 409


class AlreadyLinkedError(ConflictError):
    code = "already_linked"


class InvalidRecipientError(BadRequestError):
    code = "invalid_recipient"


class TextTooLongError(BadRequestError):
    code = "text_too_long"
    status = 413


class NotMemberError(ForbiddenError):
    code = "not_member"


class BlockedError(ForbiddenError):
    """The sender blocked this conversation's peer: unblock first (protocol.md §15)."""

    code = "blocked"


class RecipientUnavailableError(ForbiddenError):
    """The recipient takes no message from the sender: the same answer whatever the reason
    (a block, protocol.md §15), so it proves none."""

    code = "recipient_unavailable"


class AckBeyondLastError(BadRequestError):
    """An ack (or read mark) for a seq the conversation does not have yet."""

    code = "seq_out_of_range"


class LongPollGoneError(WebimError):
    """The long-poll connection expired (no poll within its window) or was closed: open a new
    one, then pull (`sync`) what was missed."""

    code = "connection_gone"
    status = 410


class MethodNotAllowedError(WebimError):
    """The path exists, without this method (locally; API Gateway answers `unknown_route`)."""

    code = "method_not_allowed"
    status = 405


class RateLimitedError(WebimError):
    """A limit was reached (docs/protocol.md §8): nothing was done; retry after `retry_after`
    seconds (REST also says it in a `Retry-After` header)."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str = "", retry_after: int = 1, ref: str | None = None) -> None:
        super().__init__(message, ref)
        self.retry_after = max(1, int(retry_after))

    def to_frame(self) -> dict[str, Any]:
        return {**super().to_frame(), "retry_after": self.retry_after}


class NotAllowedError(ForbiddenError):
    """A group member whose role does not allow this change (protocol.md §13.2)."""

    code = "not_allowed"


class GroupFullError(ConflictError):
    """The change would take the group past its member limit."""

    code = "group_full"


class TooManyGroupsError(ConflictError):
    """The creator of a group is already in the most groups allowed."""

    code = "too_many_groups"


class CannotAddError(ForbiddenError):
    """An identity named in `group_create` / `group_add` may not be added by this actor: it has
    not written to the actor in their 1:1 conversation, does not exist, or is in the most groups
    allowed. One answer for all three, so it tells the actor nothing about the identity
    (protocol.md §13.2)."""

    code = "cannot_add"


class OwnerMustStayError(ConflictError):
    """The owner leaves while other members remain: hand ownership on first (`group_role`)."""

    code = "owner_must_stay"


# -- delete for everyone (protocol.md §16) -----------------------------------------------------
class MessageNotFoundError(NotFoundError):
    """No message with this seq the caller may see (never stored, or before it joined)."""

    code = "message_not_found"


class NotYourMessageError(ForbiddenError):
    """Only the sender deletes a message (and a group's owner and admins any of its messages)."""

    code = "not_your_message"


class DeleteWindowPassedError(ForbiddenError):
    """The sender's window to delete this message (`delete_window_seconds`) has passed."""

    code = "delete_window_passed"


class NotDeletableError(ForbiddenError):
    """An event message (a group change, a `deleted` tombstone) is not deleted."""

    code = "not_deletable"


# -- photos (protocol.md §14.1) -----------------------------------------------------------------
class UnsupportedMediaTypeError(BadRequestError):
    """`content_type` is not one of image/jpeg, image/png, image/webp, image/gif."""

    code = "unsupported_media_type"
    status = 415


class UploadTooLargeError(BadRequestError):
    """The declared size is above the server's `max_bytes`."""

    code = "upload_too_large"
    status = 413


class UploadNotFoundError(NotFoundError):
    """No such upload of the caller's: never uploaded, expired, or someone else's (never
    revealed as such)."""

    code = "upload_not_found"


class UploadMismatchError(BadRequestError):
    """The uploaded object is not what the message declares (type, size or format)."""

    code = "upload_mismatch"
    status = 422


# -- operator tools (docs/operator.md) --------------------------------------------------------
class BannedError(ForbiddenError):
    """An operator banned this identity: its tokens are refused everywhere, its connections closed."""

    code = "banned"


class NotOperatorError(ForbiddenError):
    """An operator route called with a credential that carries no operator claim (a visitor's,
    a plain user's)."""

    code = "not_operator"


class ReportNotFoundError(NotFoundError):
    code = "report_not_found"
