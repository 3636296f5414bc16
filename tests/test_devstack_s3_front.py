"""The local stack's S3 front (devstack/s3_front.py), over real HTTP: a presigned POST made by
boto3 as the app makes it stores exactly the key, type, size and tag its policy pins, and
nothing else; a presigned GET answers the bytes only while its signature holds. On AWS, S3
itself enforces the same policy."""
from __future__ import annotations

import base64
import datetime
import json
import secrets
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
from devstack.server import build_asgi
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


def test_pages_may_show_previews_and_photos_from_the_s3_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page opened as http://localhost:8000 still reaches the front the app presigns for."""
    monkeypatch.setenv("MEDIA_ENDPOINT_URL", "http://127.0.0.1:8000/s3")
    policy = dict(part.strip().split(" ", 1) for part in page_headers()["Content-Security-Policy"].split(";"))
    assert policy["img-src"].split() == ["'self'", "data:", "blob:", "http://127.0.0.1:8000"]
    assert policy["connect-src"].split() == ["'self'", "http://127.0.0.1:8000"]
