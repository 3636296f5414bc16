"""Photos through the Python SDK on the running local stack (docs/protocol.md §14.1): the bytes
go to the stack's S3 front, never through the API; the receiver downloads the same bytes."""
from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import LocalStackProcess
from webim_client import Client, FaultyTransport, LongPollTransport, MediaHttpError, Photo, WebSocketTransport
from webim_client.media import fetch, post_form
from webim_client.transport import Frame, drop_first

pytestmark = pytest.mark.e2e


def png(width: int, height: int) -> bytes:
    """A tiny valid PNG (8-bit RGB, a gradient so every file differs by size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 40 % 256, y * 60 % 256, 128))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PREVIEW = "data:image/png;base64,iVBORw0KGgo="


def user(name: str) -> Frame:
    return {"kind": "user", "id": name}


def run(stack: LocalStackProcess, scenario: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        made: list[Client] = []

        async def client(name: str, transport: str = "ws", drop_in: Any = None, seen_out: list[Frame] | None = None,
                         **options: Any) -> Client:
            inner: Any = (WebSocketTransport(stack.ws_url_as(name)) if transport == "ws"
                          else LongPollTransport(stack.base_url + "/api", stack.dev_login(name), wait=10))

            def record(frame: Frame) -> bool:
                if seen_out is not None:
                    seen_out.append(frame)
                return False

            new = Client(FaultyTransport(inner, drop_in=drop_in, drop_out=record), **options)
            made.append(new)
            await new.start()
            return new

        try:
            await asyncio.wait_for(scenario(client), 60)
        finally:
            for c in made:
                await c.close()

    asyncio.run(main())


def test_two_sdk_clients_exchange_a_png_one_on_long_poll(local_stack: LocalStackProcess) -> None:
    photo, answer = png(3, 2), png(5, 4)

    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice, bob = await client("pic-alice"), await client("pic-bob", "lp")
        sent = await alice.send_image(Photo(photo, "image/png", 3, 2, preview=PREVIEW), text="the broken part",
                                      to=user("pic-bob"))
        await asyncio.wait_for(sent.delivered, 10)
        received = await asyncio.wait_for(bob.inbox.get(), 10)
        image = received["image"]
        assert received["text"] == "the broken part"
        assert {k: image[k] for k in ("content_type", "size", "width", "height", "preview")} == {
            "content_type": "image/png", "size": len(photo), "width": 3, "height": 2, "preview": PREVIEW}
        assert "upload_id" not in image and "key" not in image  # only a signed URL
        assert image["url"].startswith(local_stack.base_url + "/s3/")
        assert await bob.download_image(received) == photo
        # and back, a photo without a caption, from the long-poll side
        reply = await bob.send_image(Photo(answer, "image/png", 5, 4), conversation_id=received["conversation_id"])
        back = await asyncio.wait_for(alice.inbox.get(), 10)
        assert back["text"] == "" and back["image"]["size"] == len(answer)
        assert await alice.download_image(back) == answer
        await asyncio.wait_for(reply.delivered, 10)

    run(local_stack, scenario)


def test_a_lost_sent_retries_the_same_frame_and_one_photo_is_stored(local_stack: LocalStackProcess) -> None:
    photo = png(4, 4)
    frames: list[Frame] = []

    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice = await client("picloss-alice", drop_in=drop_first(lambda f: f.get("type") == "sent"),
                             seen_out=frames, ack_timeout=0.5)
        bob = await client("picloss-bob")
        sent = await alice.send_image(Photo(photo, "image/png", 4, 4), to=user("picloss-bob"))
        await asyncio.wait_for(sent.accepted, 10)
        assert sent.attempts >= 2  # the first `sent` was lost
        sends = [f for f in frames if f["action"] == "send"]
        assert len(sends) >= 2 and len({(f["id"], f["image"]["upload_id"]) for f in sends}) == 1
        assert len([f for f in frames if f["action"] == "upload"]) == 1  # one slot, one upload
        received = await asyncio.wait_for(bob.inbox.get(), 10)
        history = await bob.history(sent.conversation_id or "")
        assert [(m["seq"], m["image"]["size"]) for m in history["messages"]] == [(received["seq"], len(photo))]
        assert await bob.download_image(history["messages"][0]) == photo

    run(local_stack, scenario)


def test_an_expired_or_refused_url_is_refreshed(local_stack: LocalStackProcess) -> None:
    photo = png(2, 2)

    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice, bob = await client("picurl-alice"), await client("picurl-bob")
        await alice.send_image(Photo(photo, "image/png", 2, 2), to=user("picurl-bob"))
        received = await asyncio.wait_for(bob.inbox.get(), 10)
        received["image"]["url_expires"] = 0  # about to expire: a new URL before the GET
        assert await bob.download_image(received) == photo
        assert received["image"]["url_expires"] > 0  # refreshed (media_url)
        # a URL S3 refuses (here: a broken signature) is refreshed once
        received["image"]["url"] = received["image"]["url"][:-4] + "0000"
        assert await bob.download_image(received) == photo

    run(local_stack, scenario)


def test_the_stack_refuses_an_upload_of_another_size_than_the_slot(local_stack: LocalStackProcess) -> None:
    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice = await client("picsize-alice")
        photo = png(3, 3)
        slot = await alice.request("upload", content_type="image/png", size=len(photo))
        with pytest.raises(MediaHttpError) as refused:
            await asyncio.to_thread(post_form, slot["url"], slot["fields"], photo + b"\0", "image/png")
        assert (refused.value.status, refused.value.code) == (400, "EntityTooLarge")
        with pytest.raises(MediaHttpError) as refused:
            await asyncio.to_thread(post_form, slot["url"], {**slot["fields"], "Content-Type": "image/gif"},
                                    photo, "image/gif")
        assert (refused.value.status, refused.value.code) == (403, "AccessDenied")
        await asyncio.to_thread(post_form, slot["url"], slot["fields"], photo, "image/png")  # as granted

    run(local_stack, scenario)


def test_posting_again_to_the_slot_of_a_sent_photo_changes_nothing_the_receiver_sees(
        local_stack: LocalStackProcess) -> None:
    """Issue 21's reproduction, black-box on the stack: the slot's form is valid 300 s; after
    the send, the sender posts an HTML page through it as image/png (accepted: 204, as S3
    would). The receiver's URL still serves the photo, as image/png, never sniffed."""
    photo = png(6, 6)
    page = b"<html><script>alert(document.cookie)</script></html>".ljust(len(photo), b" ")

    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice, bob = await client("picrepost-alice"), await client("picrepost-bob")
        slot = await alice.request("upload", content_type="image/png", size=len(photo))
        await asyncio.to_thread(post_form, slot["url"], slot["fields"], photo, "image/png")
        image = {"upload_id": slot["upload_id"], "content_type": "image/png", "size": len(photo), "width": 6,
                 "height": 6}
        sent = await alice.send("", to=user("picrepost-bob"), image=image)
        await asyncio.wait_for(sent.accepted, 10)
        received = await asyncio.wait_for(bob.inbox.get(), 10)
        await asyncio.to_thread(post_form, slot["url"], slot["fields"], page, "image/png")  # accepted
        data, content_type = await asyncio.to_thread(fetch, received["image"]["url"])
        assert (data, content_type) == (photo, "image/png")
        assert await bob.download_image(received) == photo
        # the same upload sent again: the photo of its first send
        again = await alice.send("again", to=user("picrepost-bob"), image=image)
        await asyncio.wait_for(again.accepted, 10)
        assert await bob.download_image(await asyncio.wait_for(bob.inbox.get(), 10)) == photo

    run(local_stack, scenario)
