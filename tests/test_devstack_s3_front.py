"""The local stack's S3 front (devstack/s3_front.py), over real HTTP: a presigned POST made by
boto3 as the app makes it stores exactly the key, type, size and tag its policy pins, and
nothing else; a presigned GET answers the bytes only while its signature holds. On AWS, S3
itself enforces the same policy. A POST is checked from its fields before its file is read
(issue 21): a refused one is answered while the client is still sending, and a large upload
is held in bounded memory."""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import pytest
from botocore import auth as botocore_auth
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import REGION, mint_credentials
from devstack.invoker import LambdaInvoker
from devstack.page_headers import page_headers
from devstack.s3_front import MAX_PRE_DATA_BYTES, SPOOL_BYTES, Accepted, FormReader, S3Front, s3_routes
from devstack.server import build_asgi, environment_credentials
from tests import recording_app
from tests.conftest import free_port
from tests.harness import serve_in_thread

BUCKET = "webim-test-media"
KEY = "u/AAAAAAAAAAAAAAAAAAAAAA/BBBBBBBBBBBBBBBBBBBBBB"
TAGGING = "<Tagging><TagSet><Tag><Key>webim</Key><Value>pending</Value></Tag></TagSet></Tagging>"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-a-boundary\r\n" * 3


@pytest.fixture
def front(aws: None) -> Iterator[str]:
    """A server with the S3 front, accepting only this process's freshly minted credentials."""
    mint_credentials()
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    port = free_port()
    executor = ThreadPoolExecutor(max_workers=4)
    asgi = build_asgi(LambdaInvoker(recording_app.app), ConnectionRegistry(), executor, frontend=None)
    with serve_in_thread(asgi, port) as host:
        yield host
    executor.shutdown(wait=True)


@pytest.fixture
def counted(aws: None) -> Iterator[tuple[str, S3Front]]:
    """The S3 front alone, whose POST stats the test reads."""
    from starlette.applications import Starlette  # noqa: PLC0415

    mint_credentials()
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    front = S3Front(environment_credentials())
    with serve_in_thread(Starlette(routes=s3_routes(None, front=front)), free_port()) as host:
        yield host, front


def presigner(host: str, credentials: dict[str, str] | None = None) -> Any:
    """An S3 client used only to sign, as the app's (chalicelib/storage/media.py) on the local stack."""
    return boto3.client("s3", region_name=REGION, endpoint_url=f"http://{host}/s3",
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}), **(credentials or {}))


def slot(host: str, size: int = len(PNG), content_type: str = "image/png", expires: int = 300,
         credentials: dict[str, str] | None = None) -> dict[str, Any]:
    post: dict[str, Any] = presigner(host, credentials).generate_presigned_post(
        Bucket=BUCKET, Key=KEY, Fields={"Content-Type": content_type, "tagging": TAGGING},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size], {"tagging": TAGGING}],
        ExpiresIn=expires)
    return post


def multipart(parts: list[tuple[str, str | bytes]]) -> tuple[bytes, str]:
    """A form with its parts in exactly this order (`file` gets a filename)."""
    boundary = secrets.token_hex(12)
    body = b""
    for name, value in parts:
        filename = '; filename="photo.png"' if name == "file" else ""
        data = value if isinstance(value, bytes) else value.encode()
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(post: dict[str, Any], data: bytes = PNG, fields: dict[str, str] | None = None,
           file_at: int | None = None) -> httpx.Response:
    parts: list[tuple[str, str | bytes]] = list({**post["fields"], **(fields or {})}.items())
    parts.insert(len(parts) if file_at is None else file_at, ("file", data))
    body, content_type = multipart(parts)
    return httpx.post(post["url"], content=body, headers={"content-type": content_type})


def s3() -> Any:
    return boto3.client("s3", region_name=REGION)


def stored_keys() -> list[str]:
    return [item["Key"] for item in s3().list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>')
    return response.text.split("<Code>")[1].split("</Code>")[0]


def test_a_presigned_post_stores_the_object_with_its_type_and_tag(front: str) -> None:
    post = slot(front)
    assert post["url"] == f"http://{front}/s3/{BUCKET}"
    # as a browser sends it: the fields in order, then the file (httpx puts files last)
    response = httpx.post(post["url"], data=post["fields"], files={"file": ("photo.png", PNG, "image/png")},
                          headers={"origin": "https://shop.example"})
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    head = s3().head_object(Bucket=BUCKET, Key=KEY)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(PNG)
    assert s3().get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"] == [{"Key": "webim", "Value": "pending"}]
    assert s3().get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == PNG  # binary-exact


def test_the_upload_preflight_allows_any_origin(front: str) -> None:
    # An XHR with upload progress listeners is preflighted
    response = httpx.options(f"http://{front}/s3/{BUCKET}", headers={
        "origin": "https://shop.example", "access-control-request-method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"key": KEY[:-1] + "C"}, 403, "AccessDenied"),  # another key
    ({"Content-Type": "image/gif"}, 403, "AccessDenied"),  # another type
    ({"tagging": TAGGING.replace("pending", "attached")}, 403, "AccessDenied"),  # born attached
    ({"x-amz-meta-extra": "1"}, 403, "AccessDenied"),  # a field the policy does not mention
    ({"x-amz-signature": "0" * 64}, 403, "SignatureDoesNotMatch"),
])
def test_a_slot_cannot_store_anything_else(front: str, change: dict[str, str], status: int, code: str) -> None:
    response = upload(slot(front), fields=change)
    assert (response.status_code, error_code(response)) == (status, code)
    assert stored_keys() == []


@pytest.mark.parametrize(("data", "code"), [(PNG + b"!", "EntityTooLarge"), (PNG[:-1], "EntityTooSmall")])
def test_a_slot_takes_exactly_its_size(front: str, data: bytes, code: str) -> None:
    response = upload(slot(front), data=data)
    assert (response.status_code, error_code(response)) == (400, code)
    assert stored_keys() == []


def test_a_tampered_policy_is_refused(front: str) -> None:
    post = slot(front)
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not isinstance(c, list)]  # any size
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    response = upload(post, data=PNG * 2, fields={"policy": forged})
    assert (response.status_code, error_code(response)) == (403, "SignatureDoesNotMatch")
    assert stored_keys() == []


def test_an_expired_policy_is_refused(front: str) -> None:
    response = upload(slot(front, expires=-1))
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert "Policy expired" in response.text
    assert stored_keys() == []


def test_a_policy_signed_with_other_credentials_is_refused(front: str) -> None:
    other = {"aws_access_key_id": "AKIAOTHER", "aws_secret_access_key": "other", "aws_session_token": "other"}
    response = upload(slot(front, credentials=other))
    assert (response.status_code, error_code(response)) == (403, "InvalidAccessKeyId")
    assert stored_keys() == []


@pytest.mark.parametrize("after_file", ["Content-Type", "tagging", "key"])
def test_the_file_must_be_the_last_field(front: str, after_file: str) -> None:
    """As S3, fields after the file are ignored, so a pinned one is missing."""
    post = slot(front)
    names = list(post["fields"])
    names.remove(after_file)
    post["fields"] = {name: post["fields"][name] for name in [*names, after_file]}
    response = upload(post, file_at=len(names))
    assert response.status_code in (400, 403)
    assert error_code(response) in ("AccessDenied", "InvalidArgument")
    assert stored_keys() == []


def test_a_form_without_a_file_or_not_multipart_is_refused(front: str) -> None:
    post = slot(front)
    body, content_type = multipart(list(post["fields"].items()))
    response = httpx.post(post["url"], content=body, headers={"content-type": content_type})
    assert (response.status_code, error_code(response)) == (400, "InvalidArgument")
    response = httpx.post(post["url"], data=post["fields"])  # urlencoded
    assert (response.status_code, error_code(response)) == (412, "PreconditionFailed")
    assert stored_keys() == []


def stored(front: str, content_type: str = "image/png") -> None:
    response = upload(slot(front, content_type=content_type), fields={"Content-Type": content_type})
    assert response.status_code == 204, response.text


def presigned_get(front: str, key: str = KEY, expires: int = 900, method: str = "get_object") -> str:
    url: str = presigner(front).generate_presigned_url(method, Params={"Bucket": BUCKET, "Key": key},
                                                       ExpiresIn=expires)
    return url


def test_a_presigned_get_answers_the_bytes_and_type(front: str) -> None:
    stored(front, "image/webp")
    url = presigned_get(front)
    response = httpx.get(url, headers={"origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["access-control-allow-origin"] == "*"
    cache = response.headers["cache-control"]
    assert cache.startswith("private, max-age=") and 0 < int(cache.rsplit("=", 1)[1]) <= 900
    head = httpx.head(presigned_get(front, method="head_object"))
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PNG)) and head.content == b""


def test_a_tampered_get_is_refused(front: str) -> None:
    stored(front)
    url = presigned_get(front)
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    forged = url.replace(signature, ("1" if signature[0] != "1" else "2") + signature[1:])
    assert (httpx.get(forged).status_code, error_code(httpx.get(forged))) == (403, "SignatureDoesNotMatch")
    # the same signature for another key, or a longer life
    other = url.replace(f"/{KEY}?", f"/{KEY[:-1]}C?")
    assert httpx.get(other).status_code == 403
    longer = url.replace("X-Amz-Expires=900", "X-Amz-Expires=901")
    assert httpx.get(longer).status_code == 403
    unsigned = url.split("?", 1)[0]
    assert (httpx.get(unsigned).status_code, error_code(httpx.get(unsigned))) == (403, "AccessDenied")


def test_an_expired_get_is_refused(front: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stored(front)
    signed_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: signed_at)
    response = httpx.get(presigned_get(front, expires=600))
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert "Request has expired" in response.text


def test_a_missing_key_is_404(front: str) -> None:
    response = httpx.get(presigned_get(front, key=KEY[:-1] + "Z"))
    assert (response.status_code, error_code(response)) == (404, "NoSuchKey")
    with pytest.raises(ClientError):  # and nothing appeared
        s3().head_object(Bucket=BUCKET, Key=KEY[:-1] + "Z")


def test_pages_may_show_previews_and_photos_from_the_s3_front() -> None:
    """A page opened as http://localhost:8000 still reaches the front the app presigns for."""
    headers = page_headers(media_endpoint_url="http://127.0.0.1:8000/s3")
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["img-src"].split() == ["'self'", "data:", "blob:", "http://127.0.0.1:8000"]
    assert policy["connect-src"].split() == ["'self'", "http://127.0.0.1:8000"]


def test_a_presigned_get_answers_the_type_it_was_signed_with_and_never_sniffed(front: str) -> None:
    """The app signs the checked type into every photo URL (response-content-type), so what a
    form stored as its Content-Type is not what the receiver gets; nosniff on every answer."""
    stored(front, "image/webp")
    url: str = presigner(front).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": KEY, "ResponseContentType": "image/png"}, ExpiresIn=900)
    response = httpx.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    tampered = url.replace("image%2Fpng", "text%2Fhtml")
    assert tampered != url and httpx.get(tampered).status_code == 403  # the type is part of the signature
    assert httpx.get(presigned_get(front, key=KEY[:-1] + "Z")).headers["x-content-type-options"] == "nosniff"


# --- an object a message points at cannot be changed (issue 21) ------------------------------

def test_posting_again_to_a_sent_photos_slot_changes_nothing_receivers_see(front: str) -> None:
    """The slot's form stays valid 300 s after the send. Through the front, which enforces the
    policy and stores the form's tag as S3 does, posting through it again (an HTML page, as
    image/png: the policy allows it) is accepted, and changes neither the bytes, the type nor
    the tag of the object the message points at."""
    from chalicelib.logic.frames import ImageRequest, UploadRequest  # noqa: PLC0415
    from chalicelib.logic.media import Media, PhotoTerms  # noqa: PLC0415
    from chalicelib.principal import Identity  # noqa: PLC0415
    from chalicelib.storage.media import MediaBucket  # noqa: PLC0415

    bucket = MediaBucket(s3, lambda: presigner(front), BUCKET)
    media = Media(bucket, None, None,  # type: ignore[arg-type]
                  PhotoTerms(max_bytes=10 * 1024 * 1024, url_seconds=900, slot_seconds=300))
    alice = Identity("user", "alice")
    granted = media.upload(alice, UploadRequest("c-1", "image/png", len(PNG)))
    form = {"url": granted["url"], "fields": granted["fields"]}
    assert upload(form).status_code == 204
    stored_image = media.attach(alice, ImageRequest(granted["upload_id"], "image/png", len(PNG), 8, 8, None))
    media.confirm(stored_image)  # what the send does once its message is stored
    url = media.image_frame(stored_image)["url"]
    html = b"<html><script>alert(document.cookie)</script></html>".ljust(len(PNG), b" ")
    assert upload(form, data=html).status_code == 204  # the form is still valid: accepted
    response = httpx.get(url)
    assert (response.status_code, response.content) == (200, PNG)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    tags = s3().get_object_tagging(Bucket=BUCKET, Key=stored_image.key)["TagSet"]
    assert tags == [{"Key": "webim", "Value": "attached"}]  # the lifecycle rule leaves it
    # the form re-created its own key, pending (the lifecycle rule expires it); nothing else
    assert s3().get_object_tagging(Bucket=BUCKET, Key=granted["upload_id"])["TagSet"] == [
        {"Key": "webim", "Value": "pending"}]
    # and sending the upload again finds the photo of the first send
    again = media.attach(alice, ImageRequest(granted["upload_id"], "image/png", len(PNG), 8, 8, None))
    assert again.key == stored_image.key and httpx.get(media.image_frame(again)["url"]).content == PNG


# --- checked before the body is read, held in bounded memory (issue 21) --------------------------

DECLARED = 32 * 1024 * 1024  # what the forged requests promise to send (and never do)


def send_until_answered(host: str, fields: list[tuple[str, str]], file_start: bytes,
                        declared: int = DECLARED) -> tuple[int, str, int]:
    """A POST whose Content-Length promises `declared` bytes of file, of which only the fields
    and `file_start` are sent; then the answer is read. A front that waited for the rest would
    never answer (the socket's timeout fails the test). Returns (status, S3 code, bytes sent)."""
    boundary = secrets.token_hex(12)
    start = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                     for name, value in fields)
    start += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
              "Content-Type: image/png\r\n\r\n").encode() + file_start
    length = len(start) + declared - len(file_start) + len(f"\r\n--{boundary}--\r\n")
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=60) as sock:
        sock.sendall(f"POST /s3/{BUCKET} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + start)
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = sock.recv(65536)
            assert received, answer
            answer += received
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers["content-length"]):
            received = sock.recv(65536)
            assert received, body
            body += received
    code = body.decode().split("<Code>")[1].split("</Code>")[0]
    return int(lines[0].split()[1]), code, len(start)


def _forged(host: str, case: str) -> tuple[list[tuple[str, str]], int]:
    """The fields of a refused form (a 32 MB file declared), and the slot's size."""
    size = 1000 if case == "over its size" else DECLARED
    fields = dict(slot(host, size=size, expires=-1 if case == "expired" else 300)["fields"])
    if case == "forged signature":
        fields["x-amz-signature"] = "0" * 64
    elif case == "unsigned":
        fields = {"key": KEY, "Content-Type": "image/png"}
    elif case == "another key":
        fields["key"] = KEY[:-1] + "C"
    elif case == "fields too large":
        fields["x-ignore-padding"] = "x" * (MAX_PRE_DATA_BYTES + 1)
    return list(fields.items()), size


@pytest.mark.parametrize(("case", "status", "code"), [
    ("forged signature", 403, "SignatureDoesNotMatch"), ("unsigned", 403, "AccessDenied"),
    ("expired", 403, "AccessDenied"), ("another key", 403, "AccessDenied"),
    ("over its size", 400, "EntityTooLarge"), ("fields too large", 400, "MaxPostPreDataLengthExceeded")])
def test_a_refused_post_is_answered_before_its_body_is_sent(front: str, case: str, status: int, code: str) -> None:
    """32 MB promised, 64 KB of it sent, then the answer read: the refusal comes from the
    fields (or the first bytes past the slot's size), never from the whole body."""
    fields, _ = _forged(front, case)
    assert send_until_answered(front, fields, PNG + b"\0" * (64 * 1024))[:2] == (status, code)
    assert stored_keys() == []


def test_a_refused_post_reads_nothing_past_its_fields(counted: tuple[str, S3Front]) -> None:
    """The front's own count of the bytes it read: the fields and what the parser had in hand
    when the file part started (one chunk), not the 32 MB promised."""
    host, front = counted
    for case in ("forged signature", "unsigned", "expired", "another key"):
        fields, _ = _forged(host, case)
        before = front.stats.bytes_read
        _, _, sent = send_until_answered(host, fields, PNG + b"\0" * (1024 * 1024))
        assert front.stats.bytes_read - before <= sent < 2 * 1024 * 1024, case
    assert stored_keys() == []


def test_a_10_mb_upload_is_held_in_bounded_memory(counted: tuple[str, S3Front]) -> None:
    """A 10 MB photo through the front: stored byte-exact, while the front held at most one
    spool's worth (the rest on disk), the fields and one chunk in memory at once."""
    host, front = counted
    data = PNG + secrets.token_bytes(10 * 1024 * 1024 - len(PNG))
    post = slot(host, size=len(data))
    response = httpx.post(post["url"], data=post["fields"], files={"file": ("photo.png", data, "image/png")},
                          timeout=60)
    assert response.status_code == 204, response.text
    kept = s3().get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert hashlib.sha256(kept).digest() == hashlib.sha256(data).digest()
    assert front.stats.bytes_read > len(data)
    assert front.stats.peak_buffered <= SPOOL_BYTES + MAX_PRE_DATA_BYTES + 1024 * 1024 < len(data)


def test_the_form_reader_holds_one_chunk_the_fields_and_the_spool() -> None:
    """The bound exactly, without a server: 10 MB fed in 64 KB chunks."""
    data = PNG + secrets.token_bytes(10 * 1024 * 1024 - len(PNG))
    fields = {"key": KEY, "Content-Type": "image/png"}
    body, content_type = multipart([*fields.items(), ("file", data)])
    seen: list[dict[str, str]] = []

    def check(fields: dict[str, str], filename: str) -> Accepted:
        seen.append(dict(fields))
        return Accepted(KEY, ((len(data), len(data)),))

    reader = FormReader(content_type, check)
    chunk = 64 * 1024
    for offset in range(0, len(body), chunk):
        reader.feed(body[offset:offset + chunk])
        if reader.done:
            break
    accepted, file = reader.finish()
    assert seen == [{"key": KEY, "content-type": "image/png"}] and accepted.key == KEY
    assert hashlib.sha256(file.read()).digest() == hashlib.sha256(data).digest()
    assert reader.peak_buffered <= chunk + SPOOL_BYTES + MAX_PRE_DATA_BYTES
    reader.close()
