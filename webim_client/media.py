"""Photos over HTTP (docs/protocol.md §14.1): the upload to the slot the server presigned, and
the download of a signed URL. Blocking urllib3 calls; the client runs them in a thread.

The upload is S3's browser-form POST: every field of the slot in order, then the file last (S3
ignores fields after it); S3 (or the local stack's front) answers 204, or an XML error (403 for
another key, type or an expired slot; 400 EntityTooLarge/EntityTooSmall for another size).
"""
from __future__ import annotations

import re
from typing import Any

import urllib3

_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_pool = urllib3.PoolManager(retries=urllib3.Retry(total=3, connect=3, read=0, redirect=0, status=0),
                            timeout=urllib3.Timeout(connect=10, read=60))


class MediaHttpError(Exception):
    """S3 refused an upload or a download: `status` and S3's error `code` (AccessDenied,
    SignatureDoesNotMatch, EntityTooLarge, NoSuchKey, ...)."""

    def __init__(self, status: int, code: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status} {code}")
        self.status = status
        self.code = code


def _code(body: bytes) -> str:
    match = _CODE.search(body)
    return match.group(1).decode("utf-8", "replace") if match else ""


def post_form(url: str, fields: dict[str, str], data: bytes, content_type: str, filename: str = "photo") -> None:
    """POST `data` to a presigned POST slot; raises MediaHttpError when refused."""
    parts: list[tuple[str, Any]] = [*fields.items(), ("file", (filename, data, content_type))]
    body, form_type = urllib3.encode_multipart_formdata(parts)
    answer = _pool.request("POST", url, body=body, headers={"Content-Type": form_type})
    if not 200 <= answer.status < 300:
        raise MediaHttpError(answer.status, _code(answer.data), "upload refused")


def fetch(url: str) -> tuple[bytes, str]:
    """GET a signed URL: (bytes, content type); raises MediaHttpError (403 when it expired)."""
    answer = _pool.request("GET", url)
    if answer.status != 200:
        raise MediaHttpError(answer.status, _code(answer.data), "download refused")
    return answer.data, answer.headers.get("Content-Type", "")
