"""Counts the AWS calls of one photo message (issue 15, protocol.md §14.1) and prices its S3 part.

    .venv/bin/python -m bench.media_calls     # writes the `media` section of docs/performance.md

In-process on moto, with botocore `before-call` hooks on the app's session (pushes counted as
the callback API calls they stand for), in a warm container (both connections known). Counted
per operation: the upload slot, the photo send (the sender's `upload` POST goes from the
browser straight to S3: no app call, but one billed S3 request), the same send retried (a lost
`sent`: the copy is found), a text send for comparison, and `media_url`. Signing (the POST
policy, every GET URL) is local: no call.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import requests
from moto import mock_aws

from bench.report import machine, update_section
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
from devstack.local_secrets import provision_secrets
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

ALICE, BOB = Identity("user", "bench-alice"), Identity("user", "bench-bob")
PHOTO_BYTES = 300 * 1024  # a typical photo after the client scales it down (2048 px JPEG)
# S3 list prices, us-east-1 (2025): requests per 1,000, storage per GB-month, transfer out per GB
# (PUT, COPY, POST and LIST are one class; DELETE is free)
PRICE = {"post": 0.005, "copy": 0.005, "list": 0.005, "tag": 0.005, "get": 0.0004, "delete": 0.0,
         "storage_gb_month": 0.023, "transfer_gb": 0.09}
GB = 1024**3


def jpeg(size: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\x00" * (size - 4)


def measure(env: dict[str, str], photo_bytes: int = 4096) -> dict[str, list[str]]:
    """The calls of each operation, in order (a warm container: both connections cached)."""
    log = CallLog()
    sender = LoggedSender(log)
    services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=counted_session(log),
                                 sender=sender)
    h = Harness(services, sender, log)
    h.connect("bench-a", ALICE)
    h.connect("bench-b", BOB)

    def answer(connection: str, **frame: Any) -> dict[str, Any]:
        h.frame(connection, **frame)
        replies = [f for f in h.frames_to(connection) if f.get("ref") == frame["id"]]
        return replies[-1]  # (a retried frame is answered again)

    def calls(connection: str, **frame: Any) -> tuple[list[str], dict[str, Any]]:
        log.calls.clear()
        reply = answer(connection, **frame)
        assert reply.get("type") != "error", reply
        return list(log.calls), reply

    # warm: each connection has sent a frame (its record is cached), the conversation exists
    answer("bench-a", action="send", id="warm-a", text="hi", to=BOB.to_json())
    answer("bench-b", action="send", id="warm-b", text="hello", to=ALICE.to_json())

    measured: dict[str, list[str]] = {}
    measured["upload slot"], slot = calls("bench-a", action="upload", id="u-1", content_type="image/jpeg",
                                          size=photo_bytes)
    posted = requests.post(slot["url"], data=slot["fields"], files={"file": ("photo.jpg", jpeg(photo_bytes))},
                           timeout=30)
    assert posted.status_code == 204, posted.text
    measured["text send"], _ = calls("bench-a", action="send", id="t-1", text="a text", to=BOB.to_json())
    image = {"upload_id": slot["upload_id"], "content_type": "image/jpeg", "size": photo_bytes,
             "width": 800, "height": 600}
    measured["photo send"], sent = calls("bench-a", action="send", id="p-1", text="", image=image,
                                         to=BOB.to_json())
    measured["photo send retried"], _ = calls("bench-a", action="send", id="p-1", text="", image=image,
                                              to=BOB.to_json())
    measured["media_url"], _ = calls("bench-b", action="media_url", id="m-1",
                                     conversation_id=sent["conversation_id"], seq=sent["seq"])
    return measured


def s3_cost_per_message(photo_bytes: int = PHOTO_BYTES, viewers: int = 1) -> dict[str, float]:
    """USD of one photo message's S3 part: the browser's POST, the app's list, copy, ranged
    GET, delete and tagging, each receiver's GET and transfer out, a month of storage (one object: the
    upload is deleted once copied)."""
    return {
        "upload POST (browser)": PRICE["post"] / 1000,
        "ListObjectsV2 (a copy already?)": PRICE["list"] / 1000,
        "CopyObject (attach)": PRICE["copy"] / 1000,
        "ranged GetObject (check the copy)": PRICE["get"] / 1000,
        "DeleteObject (the upload)": PRICE["delete"] / 1000,
        "PutObjectTagging (attached, once stored)": PRICE["tag"] / 1000,
        f"GET by {viewers} receiver(s)": viewers * PRICE["get"] / 1000,
        f"transfer out, {photo_bytes // 1024} KB x {viewers}": viewers * photo_bytes / GB * PRICE["transfer_gb"],
        f"storage, {photo_bytes // 1024} KB, per month": photo_bytes / GB * PRICE["storage_gb_month"],
    }


def main() -> None:
    fake_credentials()
    serialize_moto_calls()
    with mock_aws(), tempfile.TemporaryDirectory() as local:
        env = {**EmbeddedAws(stage="bench").provision(), **provision_secrets("bench", Path(local))}
        measured = measure(env)
    text, photo = measured["text send"], measured["photo send"]
    extra = [call for call in photo if call.startswith("s3.")]
    cost = s3_cost_per_message()
    total = sum(cost.values())
    lines = [
        f"`.venv/bin/python -m bench.media_calls` ({machine()}; in-process on moto, botocore `before-call` "
        "hooks on the app's session, pushes counted as callback API calls; a warm container, receiver "
        "online; signing the POST policy and every GET URL is local: no call)",
        "",
        "| operation | AWS calls | calls |",
        "|---|---|---|",
        *[f"| {name} | **{len(calls)}** | {', '.join(f'`{c}`' for c in calls)} |" for name, calls in measured.items()],
        "",
        f"A photo send costs the app **{len(photo) - len(text)} calls more than a text send** "
        f"({', '.join(f'`{c}`' for c in extra)}): a list of at most one key finds an earlier copy "
        "of the upload (none the first time); a server-side CopyObject moves the upload to a key "
        "under `m/` that no POST form can name, born `webim=pending` with the declared type; one "
        "ranged GetObject (bytes 0-15) of the copy checks size (its Content-Range) and magic bytes at "
        "once, so what is checked is what is kept; the upload is deleted (a free request); once the "
        "message is stored, PutObjectTagging tags the copy `webim=attached` (so the lifecycle rule "
        "keeps it, and expires the copy of a send refused by its own write and never retried). A "
        "retried send (or the photo sent again) finds the copy: "
        f"{len([c for c in measured['photo send retried'] if c.startswith('s3.')])} S3 calls. The slot "
        "is one counter update (the upload rate limit).",
        "",
        f"S3 part of one photo message ({PHOTO_BYTES // 1024} KB, viewed once by one receiver; S3 list prices, "
        "us-east-1, per request class; on top of a text message's cost, \"What one message costs\" above):",
        "",
        "| item | USD per message | per million messages |",
        "|---|---|---|",
        *[f"| {name} | {usd:.10f} | ${usd * 1e6:,.2f} |" for name, usd in cost.items()],
        f"| **total** | **{total:.10f}** | **${total * 1e6:,.2f}** |",
        "",
        "Transfer out dominates: each time a receiver loads the image (the thread's thumbnail "
        "loads it too) costs more than all the requests together; the in-frame `preview` (at most "
        "4 KB, in the message itself) is shown until then without any GET. Storage accrues per month "
        "kept (nothing expires an attached photo).",
    ]
    body = "\n".join(lines)
    print(body)
    print(json.dumps(measured, indent=1))
    update_section("media", body)


if __name__ == "__main__":
    main()

