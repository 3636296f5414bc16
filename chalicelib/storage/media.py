"""The media bucket: photos uploaded straight from the browser (docs/protocol.md §14.1).

Two clients: `client` makes the API calls (GetObject of the first bytes, PutObjectTagging);
`presigner` only signs (presigned POST and GET are computed locally, no call). They differ on
the local stack, where the browser reaches the bucket through the stack's own S3 front
(MEDIA_ENDPOINT_URL, path-style) while the app's calls are answered in-process by moto.

Objects are tagged `webim=pending` by the upload itself (the POST policy pins the tag) and
`webim=attached` once a message uses them; the bucket's lifecycle expires pending ones.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

TAG_KEY = "webim"
PENDING, ATTACHED = "pending", "attached"
FIRST_BYTES = 16
_MISSING = {"NoSuchKey", "404", "NotFound", "InvalidRange"}
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)$")


def tagging_xml(value: str) -> str:
    """The `tagging` form field of a POST upload (S3 wants the XML, not a query string)."""
    return f"<Tagging><TagSet><Tag><Key>{TAG_KEY}</Key><Value>{value}</Value></Tag></TagSet></Tagging>"


@dataclass(frozen=True)
class ObjectStart:
    """What one ranged GetObject tells about an uploaded object."""

    content_type: str
    size: int  # the whole object's, from Content-Range
    first_bytes: bytes


class MediaBucket:
    """`client` and `presigner` are factories of boto3 S3 clients, built on first use: S3's
    model is large, and most events (acks, pings, text) never touch the bucket."""

    def __init__(self, client: Callable[[], Any], presigner: Callable[[], Any], bucket: str) -> None:
        self._factories = {"client": client, "presigner": presigner}
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.bucket = bucket

    def _get(self, name: str) -> Any:
        with self._lock:
            if name not in self._built:
                self._built[name] = self._factories[name]()
            return self._built[name]

    @property
    def _client(self) -> Any:  # for the calls
        return self._get("client")

    @property
    def _presigner(self) -> Any:  # only to sign (no calls)
        return self._get("presigner")

    def presigned_post(self, key: str, content_type: str, size: int, expires_seconds: int) -> dict[str, Any]:
        """{"url", "fields"} of a POST that can store exactly this key, type, size and tag.

        boto3 adds the bucket and key (exact) conditions itself; the rest are pinned here."""
        tagging = tagging_xml(PENDING)
        post: dict[str, Any] = self._presigner.generate_presigned_post(
            Bucket=self.bucket, Key=key,
            Fields={"Content-Type": content_type, "tagging": tagging},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size],
                        {"tagging": tagging}],
            ExpiresIn=expires_seconds,
        )
        return post

    def start_of(self, key: str) -> ObjectStart | None:
        """Type, size and first bytes in one ranged GetObject (the Content-Range header gives
        the whole size, so no HeadObject is needed); None when there is no such object."""
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{FIRST_BYTES - 1}")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        body = answer["Body"].read()
        match = _CONTENT_RANGE.match(answer.get("ContentRange") or "")
        size = int(match.group(1)) if match else int(answer.get("ContentLength", len(body)))
        return ObjectStart(str(answer.get("ContentType", "")), size, body)

    def tag(self, key: str, value: str) -> None:
        """Replace the object's tags with webim=<value> (idempotent)."""
        self._client.put_object_tagging(Bucket=self.bucket, Key=key,
                                        Tagging={"TagSet": [{"Key": TAG_KEY, "Value": value}]})

    def presigned_get(self, key: str, expires_seconds: int) -> str:
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_seconds)
        return url
