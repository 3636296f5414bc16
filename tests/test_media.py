"""Photo messages (issue 15, protocol.md §14.1) on moto, on both transports: the upload slot's
POST policy, the checks before a photo message is stored, signed URLs for members only, the
conversation list, and the AWS calls of one photo message.

Uploads go through the slot's presigned POST with `requests`, answered by moto in-process
(its `responses` mock), and receivers fetch the signed GET URL the same way. moto's S3 POST
does NOT enforce the policy (a wrong key, size or type is stored anyway, and its `tagging`
field is ignored): the conditions are asserted here by decoding the policy document; the
local stack's S3 front (devstack/s3_front.py) enforces them, and its tests prove that.

Faults at an AWS call are botocore event hooks on the app's own session (`World(faults=...)`):
a crash before or after the call, or the call run twice, as an SDK retry after a lost answer.
"""
from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from bench.media_calls import measure
from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.logic.frames import Release
from chalicelib.logic.media import owner_part
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import CallLog, Crash, Harness, LoggedSender, counted_session

ALICE, BOB, CAROL = Identity("user", "alice"), Identity("user", "bob"), Identity("user", "carol")
CONV = direct_conversation_id(ALICE, BOB)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 300
GIF = b"GIF89a" + b"\x02" * 50
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x03" * 40
PREVIEW = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff tiny").decode()
TAGGING = "<Tagging><TagSet><Tag><Key>webim</Key><Value>pending</Value></Tag></TagSet></Tagging>"
_ids = itertools.count()


def copies_of(upload_id: str) -> str:
    """Where a message's photo lives: under m/, which no POST form names (u/<owner>/<random>
    is copied to m/<owner>/<random>/<nonce>)."""
    return "m/" + upload_id.removeprefix("u/") + "/"


class World:
    """The services on moto with recorded pushes and counted calls; jobs captured as enqueued."""

    def __init__(self, env: dict[str, str], faults: Callable[[Any], None] | None = None) -> None:
        self.env = env
        log = CallLog()
        session = counted_session(log)
        if faults is not None:
            faults(session.events)
        self.jobs: list[dict[str, Any]] = []
        session.events.register("provide-client-params.sqs.SendMessage",
                                lambda params, **_: self.jobs.append(json.loads(params["MessageBody"])))
        sender = LoggedSender(log)
        self.services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session, sender=sender)
        self.h = Harness(self.services, sender, log)
        self.bucket = env["MEDIA_BUCKET"]
        self.s3 = boto3.client("s3")
        dynamodb = boto3.resource("dynamodb")
        self.messages = dynamodb.Table(env["MESSAGES_TABLE"])
        self.members = dynamodb.Table(env["MEMBERS_TABLE"])

    def tables(self) -> list[dict[str, Any]]:
        """Everything in both tables (test-only scans): a refusal must change none of it."""
        items = self.messages.scan(ConsistentRead=True)["Items"] + self.members.scan(ConsistentRead=True)["Items"]
        return sorted(items, key=lambda i: (str(i["pk"]), str(i["sk"])))

    def tag(self, key: str) -> list[dict[str, str]]:
        return list(self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"])

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return [str(item["Key"]) for item in listed]

    def stored_image(self, conversation_id: str = CONV, seq: int = 1) -> dict[str, Any]:
        return dict(self.messages.get_item(Key={"pk": conversation_id, "sk": seq})["Item"]["image"])


class Person:
    """One identity on one transport: frames it sends and their answers, frames pushed to it."""

    def __init__(self, world: World, identity: Identity, transport: str) -> None:
        self.world, self.identity, self.transport = world, identity, transport
        self.pushed: list[dict[str, Any]] = []
        self.slots: dict[str, dict[str, Any]] = {}  # upload id -> the slot (its form stays valid 300 s)
        if transport == "ws":
            self.connection = f"ws-{identity.id}-{next(_ids)}"
            world.h.connect(self.connection, identity)
        else:
            self.connection = world.services.long_poll.open(identity)["connection_id"]
            self.cursor, self.base = 0, 1

    def ask(self, **frame: Any) -> dict[str, Any]:
        frame.setdefault("id", f"r{next(_ids)}")
        if self.transport == "ws":
            self.world.h.frame(self.connection, **frame)
            answers = [f for f in self.world.h.frames_to(self.connection) if f.get("ref") == frame["id"]]
            return answers[-1]
        (answer,) = self.world.services.long_poll.send(self.identity, self.connection, json.dumps(frame))
        return answer

    def received(self, kind: str = "message") -> list[dict[str, Any]]:
        if self.transport == "ws":
            return [f for f in self.world.h.frames_to(self.connection, kind) if "ref" not in f]
        polled = self.world.services.long_poll.poll(self.identity, self.connection, Release(self.cursor, self.base))
        self.pushed += polled["frames"]
        self.cursor, self.base = polled["cursor"], polled["base"]
        return [f for f in self.pushed if f.get("type") == kind]

    def upload(self, data: bytes, content_type: str = "image/png", declared: str | None = None,
               size: int | None = None) -> str:
        """A slot, then the browser's POST of `data` (as `content_type`) to it: the upload id."""
        slot = self.ask(action="upload", content_type=declared or content_type, size=size or len(data))
        assert slot["type"] == "upload", slot
        self.slots[str(slot["upload_id"])] = slot
        post(slot, data, content_type)
        return str(slot["upload_id"])

    def send_photo(self, upload_id: str, to: Identity | None = BOB, conversation_id: str | None = None,
                   text: str | None = "a broken part", id: str | None = None, **image: Any) -> dict[str, Any]:
        described = {"upload_id": upload_id, "content_type": "image/png", "size": len(PNG), "width": 800,
                     "height": 600, "preview": PREVIEW, **image}
        frame: dict[str, Any] = {"action": "send", "image": described, **({"id": id} if id else {})}
        if text is not None:
            frame["text"] = text
        if conversation_id is not None:
            frame["conversation_id"] = conversation_id
        else:
            assert to is not None
            frame["to"] = to.to_json()
        return self.ask(**frame)


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


@pytest.fixture(params=["ws", "lp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def post(slot: dict[str, Any], data: bytes, content_type: str = "image/png") -> None:
    """The browser's POST of `data` to a slot's form (answered by moto, which ignores the policy)."""
    fields = {**slot["fields"], "Content-Type": content_type}
    posted = requests.post(slot["url"], data=fields, files={"file": ("photo", data, content_type)}, timeout=30)
    assert posted.status_code == 204, posted.text


def fetch(url: str) -> bytes:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def signed_for(url: str, upload_id: str, seconds: int, content_type: str = "image/png") -> None:
    """A SigV4 presigned GET of a copy of this upload (never the upload's own key, which its
    form can still write), for this long, answered as the checked type."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    copy = parts.path.rsplit("/" + copies_of(upload_id), 1)
    assert len(copy) == 2 and len(copy[1]) == 22 and not parts.path.endswith(upload_id), parts.path
    assert query["response-content-type"] == [content_type]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == [str(seconds)]
    assert len(query["X-Amz-Signature"][0]) == 64 and query["X-Amz-SignedHeaders"] == ["host"]


# -- the upload slot ------------------------------------------------------------------------------
def test_a_slot_pins_bucket_key_type_exact_size_and_the_pending_tag(world: World, transport: str) -> None:
    alice = Person(world, ALICE, transport)
    before = time.time()
    slot = alice.ask(action="upload", content_type="image/webp", size=12345)
    assert slot["type"] == "upload"
    upload_id = slot["upload_id"]
    prefix, owner, random_part = upload_id.split("/")
    assert (prefix, owner) == ("u", owner_part(ALICE)) and len(owner) == len(random_part) == 22
    assert slot["fields"]["key"] == upload_id and slot["fields"]["Content-Type"] == "image/webp"
    assert slot["fields"]["tagging"] == TAGGING
    assert slot["max_bytes"] == 10 * 1024 * 1024
    assert before * 1000 + 300_000 - 1000 <= slot["expires_at"] <= time.time() * 1000 + 300_000
    policy = json.loads(base64.b64decode(slot["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"bucket": world.bucket} in conditions
    assert {"key": upload_id} in conditions  # exact: no starts-with, so no other key
    assert {"Content-Type": "image/webp"} in conditions
    assert ["content-length-range", 12345, 12345] in conditions  # exactly the declared size
    assert {"tagging": TAGGING} in conditions
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)
    expiration = time.mktime(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 300 - 2 <= expiration <= time.time() + 300 + 1
    # each slot its own key
    assert alice.ask(action="upload", content_type="image/webp", size=12345)["upload_id"] != upload_id


@pytest.mark.parametrize(("frame", "code"), [
    ({"content_type": "image/svg+xml", "size": 10}, "unsupported_media_type"),
    ({"content_type": "text/html", "size": 10}, "unsupported_media_type"),
    ({"content_type": "image/png", "size": 10 * 1024 * 1024 + 1}, "upload_too_large"),
    ({"content_type": "image/png", "size": 0}, "invalid_field"),
    ({"content_type": "image/png", "size": "12"}, "invalid_field"),
    ({"content_type": "image/png"}, "invalid_field"),
    ({"content_type": 5, "size": 10}, "invalid_field"),
])
def test_bad_slot_requests_are_refused(world: World, transport: str, frame: dict[str, Any], code: str) -> None:
    answer = Person(world, ALICE, transport).ask(action="upload", **frame)
    assert (answer["type"], answer["code"]) == ("error", code)


def test_slots_are_rate_limited_per_identity(provisioned: dict[str, str], transport: str) -> None:
    world = World({**provisioned, "UPLOAD_LIMIT": "2", "UPLOAD_WINDOW_SECONDS": "3600"})
    alice = Person(world, ALICE, transport)
    answers = [alice.ask(action="upload", content_type="image/png", size=10) for _ in range(3)]
    assert [a["type"] for a in answers] == ["upload", "upload", "error"]
    assert answers[2]["code"] == "rate_limited" and answers[2]["retry_after"] >= 1
    assert Person(world, BOB, transport).ask(action="upload", content_type="image/png", size=10)["type"] == "upload"


# -- sending a photo --------------------------------------------------------------------------------
def test_a_photo_is_stored_once_pushed_with_a_signed_url_and_a_retry_changes_nothing(
        world: World, transport: str) -> None:
    alice, bob = Person(world, ALICE, transport), Person(world, BOB, transport)
    upload_id = alice.upload(PNG)
    assert world.tag(upload_id) == []  # (moto ignores the POST's tagging field; S3 sets pending)
    sent = alice.send_photo(upload_id, id="p-1")
    assert sent["type"] == "sent" and sent["seq"] == 1
    stored = world.messages.get_item(Key={"pk": CONV, "sk": 1})["Item"]
    assert stored["text"] == "a broken part"
    (copy,) = world.keys("m/")
    assert copy.startswith(copies_of(upload_id)) and world.keys("u/") == []  # the upload copied, then deleted
    assert stored["image"] == {"key": copy, "content_type": "image/png", "size": len(PNG), "width": 800,
                               "height": 600, "preview": PREVIEW}
    assert world.tag(copy) == [{"Key": "webim", "Value": "attached"}]  # survives the lifecycle rule
    (pushed,) = bob.received()
    image = pushed["image"]
    assert "key" not in image and "upload_id" not in image
    assert {k: v for k, v in image.items() if k not in ("url", "url_expires")} == {
        "content_type": "image/png", "size": len(PNG), "width": 800, "height": 600, "preview": PREVIEW}
    signed_for(image["url"], upload_id, 900)
    assert time.time() * 1000 + 900_000 - 5000 <= image["url_expires"] <= time.time() * 1000 + 900_000
    assert fetch(image["url"]) == PNG
    assert pushed["text"] == "a broken part"
    # the retry (a lost `sent`): the same answer, nothing stored twice, pushed again (its
    # upload is gone: the check finds the copy)
    again = alice.send_photo(upload_id, id="p-1")
    assert (again["seq"], again["time"]) == (sent["seq"], sent["time"])
    assert world.keys() == [copy]
    messages = world.messages.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": CONV},
                                    ConsistentRead=True)["Items"]
    assert [int(m["sk"]) for m in messages] == [0, 1]
    assert [m["seq"] for m in bob.received()] == [1, 1]
    assert bob.received()[1]["image"]["content_type"] == "image/png"


# -- an object a message points at cannot be changed (issue 21) --------------------------------------
HTML = b"<html><script>alert(document.cookie)</script></html>".ljust(len(PNG), b" ")
PNG2 = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(200)))  # another photo of the same size


def test_posting_to_the_slot_again_after_the_send_changes_nothing_a_message_points_at(
        world: World, transport: str) -> None:
    """The slot's form stays valid 300 s after the send; posting through it again (an HTML page
    declared image/png, or another photo) changes neither the bytes, the type nor the tag of
    what receivers see, now or later."""
    alice, bob = Person(world, ALICE, transport), Person(world, BOB, transport)
    upload_id = alice.upload(PNG)
    alice.send_photo(upload_id, id="p-1")
    (pushed,) = bob.received()
    image = world.stored_image()
    slot = alice.slots[upload_id]
    post(slot, HTML)
    # what S3 stores for that form (moto's POST ignores its tagging field): the tag too
    world.s3.put_object(Bucket=world.bucket, Key=upload_id, Body=HTML, ContentType="image/png",
                        Tagging="webim=pending")
    response = requests.get(pushed["image"]["url"], timeout=30)
    assert (response.status_code, response.content) == (200, PNG)
    assert response.headers["content-type"] == "image/png"
    assert world.tag(image["key"]) == [{"Key": "webim", "Value": "attached"}]  # the lifecycle leaves it
    assert fetch(bob.ask(action="media_url", conversation_id=CONV, seq=1)["url"]) == PNG
    # because no form the sender holds names that key: each pins its own, exactly
    conditions = json.loads(base64.b64decode(slot["fields"]["policy"]))["conditions"]
    assert {"key": upload_id} in conditions and image["key"] != upload_id and image["key"].startswith("m/")
    # the lost-`sent` retry of that send still answers the message as stored
    assert alice.send_photo(upload_id, id="p-1")["seq"] == 1
    assert world.stored_image() == image and fetch(bob.received()[-1]["image"]["url"]) == PNG
    # the upload id sent again, even after another photo went through the form: the photo of
    # its first send, for good (the slot is never read again)
    post(slot, PNG2)
    assert alice.send_photo(upload_id, id="p-2")["seq"] == 2
    assert fetch(bob.received()[-1]["image"]["url"]) == PNG
    assert world.stored_image(seq=2)["key"] == image["key"]
    assert fetch(bob.ask(action="media_url", conversation_id=CONV, seq=1)["url"]) == PNG


def _crash_at(event: str) -> Callable[[Any], None]:
    def arm(events: Any) -> None:
        fired: list[str] = []

        def die(**_: Any) -> None:
            if not fired:
                fired.append(event)
                raise Crash(f"injected death at {event}")
        events.register(event, die)
    return arm


def _twice(operation: str) -> Callable[[Any], None]:
    """The call reaches S3 twice, as an SDK retry after a lost answer: once here (another
    client, the same parameters), then as the app makes it."""
    def arm(events: Any) -> None:
        def again(params: dict[str, Any], **_: Any) -> None:
            getattr(boto3.client("s3"), operation)(**params)
        events.register(f"provide-client-params.s3.{operation.title().replace('_', '')}", again)
    return arm


@pytest.mark.parametrize("fault", [
    "before-call.s3.CopyObject", "after-call.s3.CopyObject", "after-call.s3.GetObject",
    "before-call.s3.DeleteObject", "after-call.s3.DeleteObject", "before-call.dynamodb.TransactWriteItems",
    "copy_object twice", "delete_object twice"])
def test_a_send_that_dies_at_any_s3_call_is_retried_into_one_intact_photo(
        provisioned: dict[str, str], fault: str) -> None:
    """A death before or after each call of the attach (and at the store), or a call run twice:
    the retried send (the same id, from a new container) stores the photo once, pointing at the
    one attached copy, with the checked bytes and type."""
    arm = _twice(fault.removesuffix(" twice")) if fault.endswith("twice") else _crash_at(fault)
    world = World(provisioned, faults=arm)
    alice = Person(world, ALICE, "ws")
    upload_id = alice.upload(PNG)
    try:
        first = alice.send_photo(upload_id, id="p-1")
        assert fault.endswith("twice") and first["type"] == "sent", first
    except Crash:
        assert not fault.endswith("twice")
    retry_world = World(provisioned)
    alice, bob = Person(retry_world, ALICE, "ws"), Person(retry_world, BOB, "ws")
    sent = alice.send_photo(upload_id, id="p-1")
    assert (sent["type"], sent["seq"]) == ("sent", 1), sent
    image = retry_world.stored_image()
    assert image["key"].startswith(copies_of(upload_id)) and retry_world.tag(image["key"]) == [
        {"Key": "webim", "Value": "attached"}]
    # the upload is deleted, or (a death between the copy and its delete) left to the lifecycle
    # rule, pending (S3 tags it from the form); the copy was made once
    assert retry_world.keys("u/") in ([], [upload_id]) and retry_world.keys("m/") == [image["key"]]
    response = requests.get(bob.ask(action="media_url", conversation_id=CONV, seq=1)["url"], timeout=30)
    assert (response.content, response.headers["content-type"]) == (PNG, "image/png")
    stored = retry_world.messages.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": CONV},
                                        ConsistentRead=True)["Items"]
    assert [int(m["sk"]) for m in stored] == [0, 1]


def test_a_send_racing_another_send_of_the_same_upload_uses_the_copy_the_other_made(
        provisioned: dict[str, str]) -> None:
    """Between this send's look for a copy and its CopyObject, another send of the same upload
    (another device, say) copied it and deleted it: the copy fails, and the copy the other made
    is found and used; nothing is copied twice."""
    raced: list[str] = []

    def race(events: Any) -> None:
        def other_send_first(params: dict[str, Any], **_: Any) -> None:
            if raced:
                return
            source = params["CopySource"]["Key"]
            raced.append(copies_of(source) + "R" * 22)
            s3 = boto3.client("s3")
            s3.copy_object(**{**params, "Key": raced[0]})
            s3.delete_object(Bucket=params["Bucket"], Key=source)
        events.register("provide-client-params.s3.CopyObject", other_send_first)

    world = World(provisioned, faults=race)
    alice, bob = Person(world, ALICE, "ws"), Person(world, BOB, "ws")
    upload_id = alice.upload(PNG)
    sent = alice.send_photo(upload_id)
    assert (sent["type"], sent["seq"]) == ("sent", 1), sent
    assert world.stored_image()["key"] == raced[0] and world.keys() == raced
    assert fetch(bob.received()[0]["image"]["url"]) == PNG


@pytest.mark.parametrize(("data", "content_type"), [(JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")])
def test_every_allowed_format_is_accepted_and_a_caption_is_optional(
        world: World, data: bytes, content_type: str) -> None:
    alice, bob = Person(world, ALICE, "ws"), Person(world, BOB, "ws")
    upload_id = alice.upload(data, content_type)
    sent = alice.send_photo(upload_id, text=None, content_type=content_type, size=len(data))
    assert sent["type"] == "sent", sent
    (pushed,) = bob.received()
    assert pushed["text"] == "" and fetch(pushed["image"]["url"]) == data


def _refusals() -> list[tuple[str, str]]:
    return [("someone else's upload", "upload_not_found"), ("never uploaded", "upload_not_found"),
            ("another declared type", "upload_mismatch"), ("another declared size", "upload_mismatch"),
            ("right type header, not a PNG", "upload_mismatch"), ("unsupported type", "unsupported_media_type"),
            ("too large", "upload_too_large"), ("not an upload id", "invalid_field"),
            ("preview not a data URL", "invalid_field"), ("width 0", "invalid_field")]


@pytest.mark.parametrize(("case", "code"), _refusals())
def test_a_refused_photo_stores_nothing_pushes_nothing_and_attaches_nothing(
        world: World, transport: str, case: str, code: str) -> None:
    alice, bob = Person(world, ALICE, transport), Person(world, BOB, transport)
    upload_id = alice.upload(PNG)
    # each case: (the upload id to send, what the send declares) from alice's good upload
    cases: dict[str, Callable[[], tuple[str, dict[str, Any]]]] = {
        "someone else's upload": lambda: (bob.upload(PNG), {}),  # a valid, existing object: Bob's
        "never uploaded": lambda: (f"u/{owner_part(ALICE)}/{'A' * 22}", {}),
        "another declared type": lambda: (upload_id, {"content_type": "image/jpeg"}),
        "another declared size": lambda: (upload_id, {"size": len(PNG) + 1}),
        "right type header, not a PNG": lambda: (alice.upload(b"<html>not an image at all</html>", "image/png"),
                                                 {"size": 32}),
        "unsupported type": lambda: (upload_id, {"content_type": "image/svg+xml"}),
        "too large": lambda: (upload_id, {"size": 10 * 1024 * 1024 + 1}),
        "not an upload id": lambda: ("../../etc/passwd", {}),
        "preview not a data URL": lambda: (upload_id, {"preview": "https://evil.example/x.png"}),
        "width 0": lambda: (upload_id, {"width": 0}),
    }
    upload_id, image = cases[case]()
    before = world.tables()
    answer = alice.send_photo(upload_id, **image)
    assert (answer["type"], answer["code"]) == ("error", code), answer
    assert world.tables() == before
    assert bob.received() == []
    if upload_id.startswith("u/") and case != "never uploaded":
        assert world.tag(upload_id) == []  # not attached: the lifecycle rule still expires it
    assert world.keys("m/") == []  # no copy left behind


def test_a_photo_to_a_conversation_one_is_not_in_is_refused_before_touching_the_upload(world: World) -> None:
    carol = Person(world, CAROL, "ws")
    alice = Person(world, ALICE, "ws")
    alice.ask(action="send", text="hi", to=BOB.to_json())
    upload_id = carol.upload(PNG)
    answer = carol.send_photo(upload_id, to=None, conversation_id=CONV)
    assert answer["code"] == "not_member"
    assert world.tag(upload_id) == [] and world.keys("m/") == []


def test_the_copy_of_a_send_refused_by_its_own_write_stays_pending_until_a_retry_stores_it(
        provisioned: dict[str, str]) -> None:
    """Refused by the store itself (the send limit, or not a member of a group): the upload was
    already copied, and the copy must survive for the client's retry (`rate_limited` means "send
    the same frame again"), but if no retry ever comes the lifecycle rule must expire it: it stays
    pending, and only the send whose message is stored tags it attached."""
    world = World({**provisioned, "SEND_LIMIT": "1"})
    alice, bob = Person(world, ALICE, "ws"), Person(world, BOB, "ws")
    upload_id = alice.upload(PNG)
    assert alice.ask(action="send", text="the one send of this minute", to=BOB.to_json())["type"] == "sent"
    refused = alice.send_photo(upload_id, id="p-1")
    assert refused["code"] == "rate_limited"
    copy, = world.keys("m/")
    assert world.tag(copy) == [{"Key": "webim", "Value": "pending"}]  # expires if never retried
    assert len(bob.received()) == 1  # the text only
    unlimited = World(provisioned)  # the retry, once the window has passed (another container)
    retried = Person(unlimited, ALICE, "ws").send_photo(upload_id, id="p-1")
    assert retried["type"] == "sent"
    assert unlimited.stored_image(seq=2)["key"] == copy
    assert world.tag(copy) == [{"Key": "webim", "Value": "attached"}]


# -- reading photos back ------------------------------------------------------------------------------
def test_sync_history_and_retransmission_carry_a_fresh_signed_url(world: World, transport: str) -> None:
    alice, bob = Person(world, ALICE, transport), Person(world, BOB, transport)
    upload_id = alice.upload(PNG)
    alice.send_photo(upload_id)
    for answer in (bob.ask(action="sync"), bob.ask(action="history", conversation_id=CONV)):
        (message,) = answer["messages"]
        signed_for(message["image"]["url"], upload_id, 900)
        assert fetch(message["image"]["url"]) == PNG
    # the ack check finds the message unacked and pushes it again, image and all
    (check,) = [job for job in world.jobs if job.get("kind") == "ack_check"]
    world.services.jobs.run(json.dumps(check))
    retransmitted = bob.received()[-1]
    assert retransmitted["seq"] == 1 and fetch(retransmitted["image"]["url"]) == PNG


def test_media_url_for_members_only(world: World, transport: str) -> None:
    alice, bob, carol = (Person(world, who, transport) for who in (ALICE, BOB, CAROL))
    upload_id = alice.upload(PNG)
    sent = alice.send_photo(upload_id)
    alice.ask(action="send", text="no photo here", to=BOB.to_json())
    for member in (alice, bob):
        answer = member.ask(action="media_url", conversation_id=CONV, seq=sent["seq"])
        assert answer["type"] == "media_url" and (answer["conversation_id"], answer["seq"]) == (CONV, 1)
        signed_for(answer["url"], upload_id, 900)
        assert fetch(answer["url"]) == PNG
        assert answer["url_expires"] >= time.time() * 1000 + 900_000 - 5000
    refused = carol.ask(action="media_url", conversation_id=CONV, seq=1)
    assert (refused["type"], refused["code"]) == ("error", "not_member")
    for seq in (2, 3):  # a message without a photo, a message that does not exist
        missing = bob.ask(action="media_url", conversation_id=CONV, seq=seq)
        assert (missing["type"], missing["code"]) == ("error", "not_found")
    assert bob.ask(action="media_url", conversation_id=CONV, seq=0)["code"] == "invalid_field"


def _group(world: World, members: list[Identity]) -> str:
    """A group written straight into the tables (helpers/GROUPS.md's layout), all joined at seq 1."""
    group = f"g_media{next(_ids):017d}"
    now = int(time.time() * 1000)
    world.messages.put_item(Item={"pk": group, "sk": 0, "last_seq": 1, "last_time": now, "last_sender": members[0].key,
                                  "preview": "", "kind": "group", "title": "Bikes", "owner": members[0].key,
                                  "members_count": len(members), "created_at": now})
    world.messages.put_item(Item={"pk": group, "sk": 1, "sender": members[0].key, "text": "", "time": now,
                                  "client_id": "c-create", "event": {"type": "created", "title": "Bikes"}})
    for member in members:
        world.members.put_item(Item={"pk": member.key, "sk": "C#" + group, "group": True, "role": "member",
                                     "joined_seq": 1, "acked_seq": 0, "read_seq": 0})
        world.members.put_item(Item={"pk": "G#" + group, "sk": member.key, "role": "member", "joined_seq": 1})
    return group


def test_a_group_photo_is_fanned_out_with_a_url_and_hidden_from_a_later_member(
        world: World, transport: str) -> None:
    alice, bob, carol = (Person(world, who, transport) for who in (ALICE, BOB, CAROL))
    group = _group(world, [ALICE, BOB])
    upload_id = alice.upload(PNG)
    sent = alice.send_photo(upload_id, to=None, conversation_id=group)
    assert sent["type"] == "sent" and sent["seq"] == 2
    (job,) = [j for j in world.jobs if j.get("kind") == GROUP_FANOUT]
    world.services.jobs.run(json.dumps(job))
    (pushed,) = bob.received()
    assert fetch(pushed["image"]["url"]) == PNG and "key" not in pushed["image"]
    assert bob.ask(action="media_url", conversation_id=group, seq=2)["type"] == "media_url"
    # Carol joins at seq 3: the photo (seq 2) was before her time
    world.members.put_item(Item={"pk": CAROL.key, "sk": "C#" + group, "group": True, "role": "member",
                                 "joined_seq": 3, "acked_seq": 2, "read_seq": 2})
    refused = carol.ask(action="media_url", conversation_id=group, seq=2)
    assert (refused["type"], refused["code"]) == ("error", "not_member")
    listed = {c["conversation_id"]: c for c in bob.ask(action="conversations")["conversations"]}
    assert listed[group]["last_message"]["image"] is True and listed[group]["last_message"]["text"] == "a broken part"


def test_the_conversation_list_says_image_for_a_photo_and_not_after_a_text(world: World, transport: str) -> None:
    alice, bob = Person(world, ALICE, transport), Person(world, BOB, transport)
    alice.send_photo(alice.upload(PNG), text=None)
    for person in (alice, bob):
        (entry,) = person.ask(action="conversations")["conversations"]
        assert entry["last_message"]["image"] is True and entry["last_message"]["text"] == ""
    bob.ask(action="send", text="nice bike", to=ALICE.to_json())
    for person in (alice, bob):
        (entry,) = person.ask(action="conversations")["conversations"]
        assert "image" not in entry["last_message"] and entry["last_message"]["text"] == "nice bike"


# -- the AWS calls of one photo message ------------------------------------------------------------------
def test_a_photo_send_costs_five_s3_calls_more_than_a_text_and_signing_costs_none(
        provisioned: dict[str, str]) -> None:
    calls = measure(provisioned)
    assert calls["upload slot"] == ["dynamodb.UpdateItem", "apigatewaymanagementapi.PostToConnection"]
    # list, copy (pending), check, delete the upload; the store; then tag the copy attached
    text = calls["text send"]
    assert calls["photo send"] == ["s3.ListObjectsV2", "s3.CopyObject", "s3.GetObject", "s3.DeleteObject",
                                   text[0], "s3.PutObjectTagging", *text[1:]]
    assert calls["photo send retried"][:2] == ["s3.ListObjectsV2", "s3.GetObject"]
    assert calls["media_url"] == ["dynamodb.GetItem", "dynamodb.GetItem", "apigatewaymanagementapi.PostToConnection"]
