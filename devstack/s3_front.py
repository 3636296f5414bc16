"""The embedded S3's front door: presigned POST uploads and presigned GETs over HTTP, as S3
answers them, so the browser uploads straight to the local stack with no AWS account.

The app presigns with `MEDIA_ENDPOINT_URL` (`http://<host>:<port>/s3`, path-style), so its
URLs land here: `POST /s3/<bucket>` (a multipart/form-data upload) and
`GET|HEAD /s3/<bucket>/<key>?X-Amz-...` (a presigned download). Like S3, a request is honoured
only when its SigV4 signature was made with the credentials this process signs with (minted at
each start, embedded_aws.py), and a POST only when its policy has not expired and every one of
its conditions holds (bucket, key, Content-Type, tagging, x-amz-* fields: eq / starts-with;
the file's size: content-length-range); anything else is refused with S3's XML error and
nothing is stored. Objects are stored in (and read from) moto in this process.

A POST is parsed as it streams in (python-multipart), as S3 does: the fields come before the
file, so the signature, expiry and every condition are checked when the file part starts,
before any of the file is read; a refusal is answered at once, without reading the rest of the
body. The file is streamed into a spooled temporary file (in memory up to SPOOL_BYTES, then on
disk) and content-length-range is enforced as it arrives: memory stays bounded whatever the
size. GET answers carry `X-Content-Type-Options: nosniff` (S3 cannot send it; see §14.1).

Not S3's whole POST surface: no `success_action_redirect`, ACLs or checksums; a file over
MAX_POST_BYTES is refused (S3 allows 5 GB); fields before the file are at most
MAX_PRE_DATA_BYTES, as S3's 20 KB.
"""
from __future__ import annotations

import base64
import binascii
import email.parser
import email.utils
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import IO, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import boto3
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

PREFIX = "/s3"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_POST_BYTES = 64 * 1024 * 1024  # the largest file, when the policy has no content-length-range
MAX_PRE_DATA_BYTES = 20 * 1024  # the fields (and part headers) before the file, as S3
SPOOL_BYTES = 1024 * 1024  # a file up to this size stays in memory; a larger one goes to disk
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # as S3: X-Amz-Expires at most a week
MAX_CLOCK_SKEW_SECONDS = 15 * 60
# Fields a POST policy need not mention (S3's rule); every other field must have a condition.
_UNCONDITIONED = {"policy", "x-amz-signature", "file"}
# Form fields that become the object's headers (by boto3 put_object parameter)
_OBJECT_HEADERS = {"content-type": "ContentType", "cache-control": "CacheControl",
                   "content-disposition": "ContentDisposition", "content-encoding": "ContentEncoding"}
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_UNRESERVED = "-_.~"


@dataclass
class S3Error(Exception):
    """An answer in S3's error shape: `<Error><Code>…</Code><Message>…</Message>…</Error>`."""

    status: int
    code: str
    message: str
    details: dict[str, str] = field(default_factory=dict)

    def response(self, head: bool = False) -> Response:
        items = {"Code": self.code, "Message": self.message, **self.details,
                 "RequestId": secrets.token_hex(8).upper()}
        xml = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in items.items())
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{xml}</Error>'
        return Response(b"" if head else body, status_code=self.status, media_type="application/xml")


def _denied(message: str) -> S3Error:
    return S3Error(403, "AccessDenied", message)


def _policy_failed(condition: Any) -> S3Error:
    return _denied(f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}")


@dataclass(frozen=True)
class Accepted:
    """What a POST's policy allows: the key to store, and the file's allowed sizes."""

    key: str
    size_limits: tuple[tuple[int, int], ...]


# --- SigV4 ---------------------------------------------------------------------------------

def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Scope:
    access_key: str
    date: str
    region: str
    service: str

    @property
    def text(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _scope(credential: str) -> _Scope:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[1].isdigit() or len(parts[1]) != 8:
        raise S3Error(400, "InvalidArgument", f"the credential is malformed: {credential!r}")
    return _Scope(*parts[:4])


def _check_credential(credentials: Credentials | None, scope: _Scope, token: str | None) -> Credentials:
    if credentials is None:
        raise _denied("Access Denied")
    if not hmac.compare_digest(scope.access_key, credentials.access_key):
        raise S3Error(403, "InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist in our records.")
    if credentials.token and not hmac.compare_digest(token or "", credentials.token):
        raise S3Error(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    if scope.service != "s3":
        raise S3Error(400, "InvalidArgument", f"the credential's service must be s3, not {scope.service!r}")
    return credentials


def _timestamp(value: str) -> float:
    try:
        return datetime.strptime(value, _TIMESTAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise S3Error(400, "InvalidArgument", f"X-Amz-Date is malformed: {value!r}") from None


# --- presigned POST ------------------------------------------------------------------------

def _malformed() -> S3Error:
    return S3Error(400, "MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data.")


def _disposition_param(headers: Message, name: str) -> str | None:
    value = headers.get_param(name, header="content-disposition")
    if value is None:
        return None
    return email.utils.collapse_rfc2231_value(value)


class FormReader:
    """A multipart/form-data POST parsed as it streams in (`feed` each chunk, then `finish`).

    Fields (names lower-cased: S3 matches them case-insensitively) are collected until the
    `file` part starts; then `check(fields, filename)` decides (the policy: it raises S3Error)
    before a byte of the file is taken. The file goes to a spooled temporary file, its size
    checked against the policy's content-length-range as it grows. As S3, parts after the file
    are ignored (`done` is set: the caller stops reading). `bytes_read` and `peak_buffered`
    (the most bytes this reader held in memory at once: the chunk being parsed, the fields,
    the file while it is spooled in memory) are for tests."""

    def __init__(self, content_type: str, check: Callable[[dict[str, str], str], Accepted],
                 spool_bytes: int = SPOOL_BYTES) -> None:
        header = Message()
        header["content-type"] = content_type
        boundary = header.get_param("boundary")
        if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
            raise S3Error(412, "PreconditionFailed", "Bucket POST must be of the enclosure-type multipart/form-data")
        self._check = check
        self._spool_bytes = spool_bytes
        self.fields: dict[str, str] = {}
        self.accepted: Accepted | None = None
        self.file: IO[bytes] | None = None
        self.size = 0
        self.done = False  # the file part ended: the rest of the body is ignored
        self.bytes_read = 0
        self.peak_buffered = 0
        self._ended = False
        self._pre_data = 0  # bytes of part headers and field values before the file
        self._part = ""  # "field", "file" or "ignored"
        self._name = ""
        self._value = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        try:
            self._parser = MultipartParser(boundary.encode("latin-1"), {
                "on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end})
        except ValueError:  # (FormParserError: a boundary too long)
            raise _malformed() from None

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Parse one chunk of the body; raises S3Error as soon as the form is refused."""
        self.bytes_read += len(chunk)
        if self.done:
            return
        self._note_buffered(len(chunk))
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            if not self.done:  # (what follows the file is ignored, even garbage)
                raise _malformed() from None

    def finish(self) -> tuple[Accepted, IO[bytes]]:
        """After the last chunk (or `done`): the accepted key and the file, at its start."""
        if not self.done:
            if self.accepted is None and self._ended:
                raise S3Error(400, "InvalidArgument", "POST requires exactly one file upload per request.")
            raise _malformed()  # the body ended inside a part
        assert self.accepted is not None and self.file is not None
        for low, _ in self.accepted.size_limits:
            if self.size < low:
                raise S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size",
                              {"ProposedSize": str(self.size), "MinSizeAllowed": str(low)})
        self.file.seek(0)
        return self.accepted, self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def _note_buffered(self, chunk: int) -> None:
        in_memory = self.size if self.size <= self._spool_bytes else 0  # (rolled over to disk past it)
        self.peak_buffered = max(self.peak_buffered, chunk + self._pre_data + in_memory)

    # -- the parser's callbacks --------------------------------------------------------------
    def _count_pre_data(self, length: int) -> None:
        if self._part == "ignored":
            return
        self._pre_data += length
        if self._pre_data > MAX_PRE_DATA_BYTES:
            raise S3Error(400, "MaxPostPreDataLengthExceeded",
                          "Your POST request fields preceeding the upload file was too large.")

    def _part_begin(self) -> None:
        self._headers = []
        self._part = "ignored" if self.done else ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_pre_data(end - start)
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_pre_data(end - start)
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((bytes(self._header_name), bytes(self._header_value)))
        self._header_name, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        if self._part == "ignored":
            return
        block = b"".join(name + b": " + value + b"\r\n" for name, value in self._headers) + b"\r\n"
        headers = email.parser.BytesHeaderParser().parsebytes(block)
        name = _disposition_param(headers, "name")
        if name is None:
            raise _malformed()
        self._name = name.lower()
        if self._name == "file":
            # the policy is checked here, from the fields alone: nothing of the file is read yet
            self.accepted = self._check(self.fields, _disposition_param(headers, "filename") or "")
            self.file = tempfile.SpooledTemporaryFile(max_size=self._spool_bytes)  # noqa: SIM115 (closed by close())
            self._part = "file"
            return
        if self._name in self.fields:
            raise S3Error(400, "InvalidArgument", f"Bucket POST can only contain one field named '{self._name}'.")
        self._part, self._value = "field", bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "field":
            self._count_pre_data(end - start)
            self._value += data[start:end]
        elif self._part == "file":
            assert self.accepted is not None and self.file is not None
            self.size += end - start
            for _, high in self.accepted.size_limits or ((0, MAX_POST_BYTES),):
                if self.size > high:
                    raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size",
                                  {"MaxSizeAllowed": str(high)})
            self.file.write(data[start:end])
            self._note_buffered(0)

    def _part_end(self) -> None:
        if self._part == "field":
            try:
                self.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed() from None
        elif self._part == "file":
            self.done = True
        self._part = "ignored" if self.done else ""

    def _end(self) -> None:
        self._ended = True


def check_post(bucket: str, fields: Mapping[str, str], filename: str, credentials: Credentials | None,
               now: float | None = None) -> Accepted:
    """What the POST may store, or S3Error: the signature, the policy's expiry and all of its
    conditions, as S3 checks them, from the fields before the file (its size is checked as it
    streams in, FormReader)."""
    if "key" not in fields:
        raise S3Error(400, "InvalidArgument", "Bucket POST must contain a field named 'key'.")
    if "policy" not in fields:
        raise _denied("Access Denied")  # an anonymous upload: the bucket is private
    for required in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"):
        if required not in fields:
            raise S3Error(400, "InvalidArgument", f"Bucket POST must contain a field named '{required}'.")
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise S3Error(400, "InvalidArgument", f"only {ALGORITHM} is supported")
    _check_post_signature(fields, credentials)
    policy = _policy(fields["policy"])
    if (now or time.time()) >= _expiration(policy):
        raise _denied("Invalid according to Policy: Policy expired.")
    key = fields["key"].replace("${filename}", filename)
    values = {**fields, "key": key, "bucket": bucket}
    size_limits: list[tuple[int, int]] = []
    conditioned: set[str] = set()
    for condition in policy["conditions"]:
        _check_condition(condition, values, size_limits, conditioned)
    extra = sorted(name for name in fields
                   if name not in _UNCONDITIONED and name not in conditioned and not name.startswith("x-ignore-"))
    if extra:
        raise _denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    return Accepted(key, tuple(size_limits))


def _check_post_signature(fields: Mapping[str, str], credentials: Credentials | None) -> None:
    """x-amz-signature: HMAC-SHA256 of the base64 policy with the credential scope's signing key."""
    scope = _scope(fields["x-amz-credential"])
    secret = _check_credential(credentials, scope, fields.get("x-amz-security-token")).secret_key
    expected = _sign(signing_key(secret, scope.date, scope.region, scope.service), fields["policy"])
    if not hmac.compare_digest(expected, fields["x-amz-signature"].lower()):
        raise _signature_mismatch()


def _signature_mismatch() -> S3Error:
    return S3Error(403, "SignatureDoesNotMatch",
                   "The request signature we calculated does not match the signature you provided. "
                   "Check your key and signing method.")


def _policy(encoded: str) -> dict[str, Any]:
    invalid = S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(policy, dict) or not isinstance(policy.get("conditions"), list):
        raise invalid
    return policy


def _expiration(policy: Mapping[str, Any]) -> float:
    value = policy.get("expiration")
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(str(value), pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value.")


def _check_condition(condition: Any, values: Mapping[str, str], size_limits: list[tuple[int, int]],
                     conditioned: set[str]) -> None:
    invalid = S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid condition: {json.dumps(condition)}")
    if isinstance(condition, dict):
        for name, expected in condition.items():
            _match("eq", str(name).lower(), expected, values, conditioned, condition)
        return
    if not isinstance(condition, list) or not condition or not isinstance(condition[0], str):
        raise invalid
    operator = condition[0].lower()
    if operator == "content-length-range":
        if len(condition) != 3 or not all(isinstance(v, int) and v >= 0 for v in condition[1:]):
            raise invalid
        size_limits.append((condition[1], condition[2]))
        return
    if operator not in ("eq", "starts-with") or len(condition) != 3 or not isinstance(condition[1], str) \
            or not condition[1].startswith("$"):
        raise invalid
    _match(operator, condition[1][1:].lower(), condition[2], values, conditioned, condition)


def _match(operator: str, name: str, expected: Any, values: Mapping[str, str], conditioned: set[str],
           condition: Any) -> None:
    if not isinstance(expected, str):
        raise S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid condition: {json.dumps(condition)}")
    conditioned.add(name)
    actual = values.get(name)
    if actual is None or not (actual == expected if operator == "eq" else actual.startswith(expected)):
        raise _policy_failed(condition)


def _tagging(xml: str) -> str:
    """The `tagging` field's XML as put_object's query-string form."""
    malformed = S3Error(400, "MalformedXML", "The XML you provided was not well-formed.")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        raise malformed from None
    tags = []
    for tag in root.iter():
        if tag.tag.rsplit("}", 1)[-1] == "Tag":
            parts = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in tag}
            if "Key" not in parts:
                raise malformed
            tags.append((parts["Key"], parts.get("Value", "")))
    return urlencode(tags)


def put_parameters(bucket: str, key: str, fields: Mapping[str, str], body: IO[bytes]) -> dict[str, Any]:
    """put_object's parameters for an accepted POST (the body streamed from its file)."""
    parameters: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body,
                                  "ContentType": fields.get("content-type", "binary/octet-stream")}
    for name, parameter in _OBJECT_HEADERS.items():
        if name in fields:
            parameters[parameter] = fields[name]
    if "tagging" in fields:
        parameters["Tagging"] = _tagging(fields["tagging"])
    metadata = {name.removeprefix("x-amz-meta-"): value for name, value in fields.items()
                if name.startswith("x-amz-meta-")}
    if metadata:
        parameters["Metadata"] = metadata
    return parameters


# --- presigned GET -------------------------------------------------------------------------

@dataclass(frozen=True)
class Presigned:
    expires_at: float  # when the URL stops working (epoch seconds)


def check_presigned(credentials: Credentials | None, method: str, raw_path: str, raw_query: str,
                    headers: Mapping[str, str], now: float | None = None) -> Presigned:
    """A SigV4 query-string signature, checked as S3 does (`headers` by lower-case name, `host`
    included): the canonical request is rebuilt from the method, the path, the query without
    X-Amz-Signature and the signed headers, with an unsigned payload."""
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    query = _signature_query(pairs)
    expires = query["X-Amz-Expires"]
    scope = _scope(query["X-Amz-Credential"])
    secret = _check_credential(credentials, scope, query.get("X-Amz-Security-Token")).secret_key
    amz_date = query["X-Amz-Date"]
    signed_at = _timestamp(amz_date)
    if not amz_date.startswith(scope.date):
        raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Date does not match the credential's date")
    signed = query["X-Amz-SignedHeaders"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        raise S3Error(400, "AuthorizationQueryParametersError", "the host header must be signed and present")
    canonical_query = "&".join(sorted(
        f"{quote(name, safe=_UNRESERVED)}={quote(value, safe=_UNRESERVED)}"
        for name, value in pairs if name != "X-Amz-Signature"))
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    canonical = "\n".join([method, quote(unquote(raw_path), safe="/~"), canonical_query, canonical_headers,
                           ";".join(signed), "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join([ALGORITHM, amz_date, scope.text, hashlib.sha256(canonical.encode()).hexdigest()])
    expected = _sign(signing_key(secret, scope.date, scope.region, scope.service), to_sign)
    if not hmac.compare_digest(expected, query["X-Amz-Signature"].lower()):
        raise _signature_mismatch()
    now = time.time() if now is None else now
    if now > signed_at + int(expires):
        raise S3Error(403, "AccessDenied", "Request has expired",
                      {"X-Amz-Expires": expires, "Expires": _iso(signed_at + int(expires)), "ServerTime": _iso(now)})
    if signed_at > now + MAX_CLOCK_SKEW_SECONDS:
        raise _denied("Request is not yet valid")
    return Presigned(signed_at + int(expires))


def _signature_query(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """A presigned URL's query by name, with every SigV4 parameter once and in its range."""
    query: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("X-Amz-") and name in query:
            raise S3Error(400, "AuthorizationQueryParametersError", f"{name} is given twice")
        query[name] = value
    if "X-Amz-Signature" not in query and "X-Amz-Credential" not in query:
        raise _denied("Access Denied")  # unsigned: the bucket is private
    missing = [name for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                 "X-Amz-SignedHeaders", "X-Amz-Signature") if name not in query]
    if missing or query["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(400, "AuthorizationQueryParametersError",
                      f"Query-string authentication version 4 requires the X-Amz-Algorithm ({ALGORITHM}), "
                      "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires "
                      "parameters.")
    expires = query["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGN_SECONDS:
        raise S3Error(400, "AuthorizationQueryParametersError",
                      f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
    return query


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --- HTTP ----------------------------------------------------------------------------------

@dataclass
class PostStats:
    """What the front took of POST bodies (for tests): bytes read from the request stream, and
    the most bytes one form held in memory at once (FormReader.peak_buffered)."""

    bytes_read: int = 0
    peak_buffered: int = 0
    posts: int = 0


class S3Front:
    """The two routes, storing in and reading from the embedded S3 (moto, this process)."""

    def __init__(self, credentials: Credentials | None, client: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._credentials = credentials
        self._client = client
        self._client_lock = threading.Lock()
        self._clock = clock
        self.stats = PostStats()

    @property
    def client(self) -> Any:
        """moto's S3 in this process (made at first use: most stacks never see an upload)."""
        with self._client_lock:
            if self._client is None:
                self._client = boto3.client("s3", region_name=os.environ.get("AWS_REGION", "us-east-1"))
            return self._client

    async def post(self, request: Request) -> Response:
        bucket = request.path_params["bucket"]

        def check(fields: dict[str, str], filename: str) -> Accepted:
            return check_post(bucket, fields, filename, self._credentials, self._clock())

        reader: FormReader | None = None
        try:
            reader = FormReader(request.headers.get("content-type", ""), check)
            async for chunk in request.stream():
                reader.feed(chunk)  # a refusal raises here: the rest of the body is never read
                if reader.done:
                    break  # (as S3, what follows the file is ignored)
            accepted, body = reader.finish()
            key = accepted.key
            answer = await run_in_threadpool(self._put, put_parameters(bucket, key, reader.fields, body))
        except S3Error as error:
            return error.response()
        except ClientDisconnect:  # gone before the body's end: nothing stored, nobody to answer
            return S3Error(400, "IncompleteBody", "You did not provide the number of bytes specified by the "
                                                  "Content-Length HTTP header.").response()
        finally:
            if reader is not None:
                reader.close()
                self.stats.posts += 1
                self.stats.bytes_read += reader.bytes_read
                self.stats.peak_buffered = max(self.stats.peak_buffered, reader.peak_buffered)
        location = f"{request.url.scheme}://{request.headers.get('host', '')}{PREFIX}/{bucket}/{quote(key)}"
        headers = {"ETag": answer.get("ETag", ""), "Location": location}
        status = reader.fields.get("success_action_status")
        if status == "201":
            xml = (f"<PostResponse><Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket>"
                   f"<Key>{escape(key)}</Key><ETag>{escape(answer.get('ETag', ''))}</ETag></PostResponse>")
            return Response('<?xml version="1.0" encoding="UTF-8"?>\n' + xml, status_code=201,
                            media_type="application/xml", headers=headers)
        return Response(status_code=200 if status == "200" else 204, headers=headers)

    def _put(self, parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self.client.put_object(**parameters)
        except ClientError as error:
            raise _as_s3_error(error) from None
        return answer

    async def get(self, request: Request) -> Response:
        head = request.method == "HEAD"
        raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = {name: request.headers[name] for name in request.headers}
        now = self._clock()
        try:
            presigned = check_presigned(self._credentials, request.method, raw_path, raw_query, headers, now)
            stored = await run_in_threadpool(self._get, request.path_params["bucket"],
                                             request.path_params["key"], head)
        except S3Error as error:
            response = error.response(head)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response
        query = dict(parse_qsl(raw_query))
        out = {
            "Content-Type": query.get("response-content-type") or stored.get("ContentType", "binary/octet-stream"),
            "Cache-Control": query.get("response-cache-control") or stored.get("CacheControl")
            or f"private, max-age={max(0, int(presigned.expires_at - now))}",
            "ETag": stored.get("ETag", ""),
            "Last-Modified": email.utils.format_datetime(stored["LastModified"].astimezone(UTC), usegmt=True),
            "Content-Length": str(stored["ContentLength"]),
            # a browser never second-guesses the type (S3 cannot send this header: the app
            # copies only checked images, and signs the checked type into the URL)
            "X-Content-Type-Options": "nosniff",
        }
        if query.get("response-content-disposition") or stored.get("ContentDisposition"):
            out["Content-Disposition"] = query.get("response-content-disposition") or stored["ContentDisposition"]
        return Response(b"" if head else stored["Body"], headers=out)

    def _get(self, bucket: str, key: str, head: bool) -> dict[str, Any]:
        try:
            if head:
                answer: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key)
            else:
                answer = self.client.get_object(Bucket=bucket, Key=key)
                answer["Body"] = answer["Body"].read()
        except ClientError as error:
            raise _as_s3_error(error) from None
        return answer


def _as_s3_error(error: ClientError) -> S3Error:
    code = str(error.response.get("Error", {}).get("Code", "InternalError"))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
    if code in ("404", "NotFound"):  # HeadObject's answer has no body, so no code
        code = "NoSuchKey"
    messages = {"NoSuchKey": "The specified key does not exist.", "NoSuchBucket": "The specified bucket does not exist"}
    return S3Error(status, code, messages.get(code, str(error.response.get("Error", {}).get("Message", code))))


def s3_routes(credentials: Credentials | None, client: Any = None, front: S3Front | None = None) -> list[BaseRoute]:
    """`/s3/{bucket}` (POST) and `/s3/{bucket}/{key}` (GET, HEAD), with the bucket's CORS rule:
    any origin may POST and GET (a presigned request carries its own authorization). `front`:
    one made by the caller (a test reads its `stats`)."""
    front = front or S3Front(credentials, client)
    router = Router([
        Route("/{bucket}", front.post, methods=["POST"]),
        Route("/{bucket}/{key:path}", front.get, methods=["GET", "HEAD"]),
    ])
    cors = CORSMiddleware(router, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST"],
                          allow_headers=["*"], expose_headers=["ETag"], max_age=3000)
    return [Mount(PREFIX, app=cors)]

