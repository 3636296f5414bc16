"""The media bucket: photos uploaded straight from the browser (docs/protocol.md §14.1).

Two clients: `client` makes the API calls (CopyObject, ranged GetObject, DeleteObject,
ListObjectsV2, PutObjectTagging); `presigner` only signs (presigned POST and GET are computed locally, no call).
They differ on the local stack, where the browser reaches the bucket through the stack's own S3
front (MEDIA_ENDPOINT_URL, path-style) while the app's calls are answered in-process by moto.

Two prefixes: uploads live under `u/` (UPLOAD_PREFIX), tagged `webim=pending` by the upload
itself (the POST policy pins the tag; the bucket's lifecycle expires pending objects); a message
points only under `m/` (ATTACHED_PREFIX), at a server-side copy born `webim=pending` and tagged
`webim=attached` once its message is stored (so the copy of a send that was refused, rate
limited or never retried expires like an unused upload). The app signs POST forms for `u/`
keys only (one exact key each), so no form can write or re-tag an object a message points at.

What a message stores of its photo (the `image` map of its item, storage/messages.py) crosses
as `StoredImage`: key (the `m/` copy), content_type (the checked type), size, width, height,
and preview (optional: a tiny inline preview, absent when none).
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
REPORT_CLOSED = "report-closed"  # a closed report's photo copy (r/): the retention's rule expires it
UPLOAD_PREFIX, ATTACHED_PREFIX = "u/", "m/"
FIRST_BYTES = 16
_MISSING = {"NoSuchKey", "404", "NotFound", "InvalidRange"}
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)$")


def tagging_xml(value: str) -> str:
    """The `tagging` form field of a POST upload (S3 wants the XML, not a query string)."""
    return f"<Tagging><TagSet><Tag><Key>{TAG_KEY}</Key><Value>{value}</Value></Tag></TagSet></Tagging>"


@dataclass(frozen=True)
class StoredImage:
    """A message's photo: the copy it points at and what was checked of it."""

    key: str
    content_type: str
    size: int
    width: int
    height: int
    preview: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> StoredImage:
        preview = item.get("preview")
        return cls(str(item["key"]), str(item["content_type"]), int(item["size"]), int(item["width"]),
                   int(item["height"]), str(preview) if preview is not None else None)

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"key": self.key, "content_type": self.content_type, "size": self.size,
                                "width": self.width, "height": self.height}
        if self.preview is not None:
            item["preview"] = self.preview
        return item


@dataclass(frozen=True)
class PresignedPost:
    """An upload form: where to POST and the fields it must carry (the signed policy among them)."""

    url: str
    fields: dict[str, str]


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

    def presigned_post(self, key: str, content_type: str, size: int, expires_seconds: int) -> PresignedPost:
        """A POST that can store exactly this key, type, size and tag.

        boto3 adds the bucket and key (exact) conditions itself; the rest are pinned here. Only
        an upload key: a form must never name a key a message may point at."""
        if not key.startswith(UPLOAD_PREFIX):
            raise ValueError(f"a POST form names upload keys only, not {key!r}")
        tagging = tagging_xml(PENDING)
        post = self._presigner.generate_presigned_post(
            Bucket=self.bucket, Key=key,
            Fields={"Content-Type": content_type, "tagging": tagging},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size],
                        {"tagging": tagging}],
            ExpiresIn=expires_seconds,
        )
        return PresignedPost(str(post["url"]), {str(k): str(v) for k, v in post["fields"].items()})

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

    def copy_pending(self, source: str, target: str, content_type: str) -> bool:
        """Server-side copy of `source` to `target`, with this Content-Type and the tag
        webim=pending until `mark_attached` (one CopyObject; the bytes never leave S3). False
        when `source` is gone. Running it twice (an SDK retry after a lost answer) writes the
        same bytes again."""
        try:
            self._client.copy_object(
                Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="REPLACE", ContentType=content_type,
                TaggingDirective="REPLACE", Tagging=f"{TAG_KEY}={PENDING}")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def mark_attached(self, key: str) -> None:
        """Tag the object webim=attached (one PutObjectTagging): a message points at it, the
        lifecycle rule no longer expires it. Idempotent."""
        self._client.put_object_tagging(Bucket=self.bucket, Key=key,
                                        Tagging={"TagSet": [{"Key": TAG_KEY, "Value": ATTACHED}]})

    def mark_report_closed(self, key: str, closed: bool, content_type: str) -> bool:
        """Tag a report's photo copy (r/...) webim=report-closed, which the bucket's report
        retention rule expires, or back to webim=attached (kept). Closing copies the object onto
        itself with the tag (one CopyObject): S3 counts a lifecycle rule's days from the object's
        creation, so the copy's clock starts at the close, as the report's `expires_at` does
        (a tag alone would let a report closed a year after it was filed lose its photo at once).
        Reopening is one PutObjectTagging. Idempotent. False when the copy is gone."""
        value = REPORT_CLOSED if closed else ATTACHED
        try:
            if closed:
                self._client.copy_object(
                    Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                    MetadataDirective="REPLACE", ContentType=content_type,
                    TaggingDirective="REPLACE", Tagging=f"{TAG_KEY}={value}")
            else:
                self._client.put_object_tagging(Bucket=self.bucket, Key=key,
                                                Tagging={"TagSet": [{"Key": TAG_KEY, "Value": value}]})
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def first_under(self, prefix: str) -> str | None:
        """The first key under `prefix` (one ListObjectsV2 of at most one key), or None."""
        answer = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        contents = answer.get("Contents") or []
        return str(contents[0]["Key"]) if contents else None

    def delete(self, key: str) -> None:
        """Delete the object (idempotent: S3 answers 204 for a missing key too)."""
        self._client.delete_object(Bucket=self.bucket, Key=key)

    def keys_under(self, prefix: str, limit: int = 1000) -> list[str]:
        """Up to `limit` (at most 1,000) keys under `prefix`: one ListObjectsV2 (an erasure's
        photos, logic/erasure.py: every copy and upload of an identity is under its owner part)."""
        answer = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=limit)
        return [str(item["Key"]) for item in answer.get("Contents") or []]

    def delete_many(self, keys: list[str]) -> None:
        """Delete up to 1,000 objects in one DeleteObjects (missing keys are no error)."""
        if keys:
            self._client.delete_objects(Bucket=self.bucket,
                                        Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})

    def presigned_get(self, key: str, expires_seconds: int, content_type: str | None = None) -> str:
        """A GET URL; with `content_type`, the answer carries that type whatever the object's
        metadata says (response-content-type is part of what is signed)."""
        params = {"Bucket": self.bucket, "Key": key}
        if content_type is not None:
            params["ResponseContentType"] = content_type
        url: str = self._presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)
        return url
