"""Operator tools (issue 26 point 4, docs/operator.md) against the real app.py served in-process:
every operator route refuses a visitor's and a plain user's token (point 6: 0 succeed); the
reports list and its status change; delete any message; a ban closes an open WebSocket and a
held long-poll wait at once, refuses the identity's tokens and new connections everywhere, and
an unban restores them."""
from __future__ import annotations

import asyncio
import io
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import app as webim
from chalicelib.errors import BannedError, NotOperatorError, UnauthorizedError
from chalicelib.logic.frames import Release, SendRequest
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.storage.bans import Ban, BansTable
from chalicelib.storage.messages import MessagesTable
from chalicelib.wiring import Services, services
from tests.test_chaos_soak import app_stack, long_poll_stack
from tests.test_identity import authenticator, claims, rs_token
from webim_client.operator import main as operator_cli

__all__ = ["app_stack", "long_poll_stack"]
Frame = dict[str, Any]
WAIT = 20.0

PAUL = Identity("user", "op-paul")
BOB = Identity("user", "op-bob")
CONV = direct_conversation_id(BOB, PAUL)


def operator_routes() -> list[tuple[str, str]]:
    routes = [(method, path) for path, entries in webim.app.routes.items() if path.startswith("/operator")
              for method in entries]
    assert len(routes) >= 7  # the list is real: reports, report, status, ban, unban, ban lookup, delete
    return routes


def api(host: str, path: str) -> str:
    return f"http://{host}/api" + path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dev_token(host: str, name: str, operator: bool = False) -> str:
    answer = httpx.post(api(host, "/identity/dev-login"), json={"name": name, "operator": operator})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


def operator_command(host: str, operator_name: str) -> Callable[..., Frame]:
    """`python -m webim_client.operator ARGS` as an operator of the app at `host`: its JSON answer."""
    base = ["--api", f"http://{host}/api", "--token", dev_token(host, operator_name, operator=True)]

    def run(*args: str) -> Frame:
        out = io.StringIO()
        assert operator_cli(base + list(args), out=out) == 0
        answer: Frame = json.loads(out.getvalue())
        return answer

    return run


def send(sender: Identity, to: Identity, text: str) -> int:
    request = SendRequest.parse({"id": f"{sender.id}-{text}", "text": text, "to": to.to_json()})
    seq = services().messaging.send(sender, request)["seq"]
    assert isinstance(seq, int)
    return seq


def file_report(reporter: Identity, seq: int, frame_id: str) -> str:
    """A report through the real protocol (a long-poll frame), as the clients file it."""
    connection = services().long_poll.open(reporter)["connection_id"]
    answers = services().long_poll.send(reporter, connection, json.dumps(
        {"action": "report", "id": frame_id, "conversation_id": CONV, "seq": seq, "reason": "scam"}))
    assert answers[0]["type"] == "reported", answers
    report_id: str = answers[0]["report_id"]
    return report_id


def messages(env: dict[str, str]) -> MessagesTable:
    return MessagesTable(boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"]), env["MEMBERS_TABLE"])


def bans(env: dict[str, str]) -> BansTable:
    return BansTable(boto3.resource("dynamodb").Table(env["MEMBERS_TABLE"]))


def test_a_visitor_or_a_plain_user_calls_every_operator_route_and_none_succeeds(
        app_stack: str, provisioned: dict[str, str]) -> None:
    send(PAUL, BOB, "hello")
    report_id = file_report(BOB, 1, "nf-1")
    visitor = httpx.post(api(app_stack, "/identity/visitor")).json()["token"]
    user = dev_token(app_stack, "plain-user")
    # everything an operator would send: only the credential is wrong
    body = {"identity": PAUL.to_json(), "reason": "spam", "status": "closed", "conversation_id": CONV, "seq": 1}
    filled = {"{report_id}": report_id, "{kind}": "user", "{identity_id}": PAUL.id}
    calls = 0
    for method, route in operator_routes():
        path = route
        for path_part, value in filled.items():
            path = path.replace(path_part, value)
        for name, token in (("visitor", visitor), ("user", user)):
            answer = httpx.request(method, api(app_stack, path), headers=bearer(token), json=body)
            assert answer.status_code == 403, (method, path, name, answer.text)
            assert answer.json()["error"]["code"] == "not_operator", (method, path, name)
            calls += 1
        answer = httpx.request(method, api(app_stack, path), json=body)  # no credential at all
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "missing_credential"
    assert calls == 2 * len(operator_routes())
    # nothing happened: no ban, the message and the report as they were
    assert bans(provisioned).get(PAUL) is None
    original = messages(provisioned).get(CONV, 1)
    assert original is not None and original.text == "hello" and not original.deleted
    assert messages(provisioned).last_seq(CONV) == 1
    operator = dev_token(app_stack, "op-admin", operator=True)
    listed = httpx.get(api(app_stack, "/operator/reports"), headers=bearer(operator)).json()
    assert [r["report_id"] for r in listed["reports"]] == [report_id]


def test_the_operator_lists_reads_and_closes_reports(app_stack: str) -> None:
    for n in range(1, 6):
        send(PAUL, BOB, f"buy {n}")
    first, second = file_report(BOB, 2, "lr-1"), file_report(BOB, 4, "lr-2")
    operator = bearer(dev_token(app_stack, "op-admin", operator=True))

    page = httpx.get(api(app_stack, "/operator/reports?limit=1"), headers=operator).json()
    assert [r["report_id"] for r in page["reports"]] == [second]  # newest first
    assert page["reports"][0]["reporter"] == BOB.to_json() and page["reports"][0]["seq"] == 4
    rest = httpx.get(api(app_stack, "/operator/reports"), params={"limit": 1, "before": page["next"]},
                     headers=operator).json()
    assert [r["report_id"] for r in rest["reports"]] == [first]

    shown = httpx.get(api(app_stack, f"/operator/reports/{first}"), headers=operator).json()
    assert shown["message"]["text"] == "buy 2" and shown["message"]["from"] == PAUL.to_json()
    assert [m["text"] for m in shown["context"]] == ["buy 1", "buy 3", "buy 4", "buy 5"]  # around it

    closed = httpx.post(api(app_stack, f"/operator/reports/{first}/status"), headers=operator,
                        json={"status": "closed"})
    assert closed.status_code == 200 and closed.json() == {"report_id": first, "status": "closed"}
    still_open = httpx.get(api(app_stack, "/operator/reports"), headers=operator).json()["reports"]
    assert [r["report_id"] for r in still_open] == [second]
    done = httpx.get(api(app_stack, "/operator/reports?status=closed"), headers=operator).json()["reports"]
    assert [(r["report_id"], r["status"]) for r in done] == [(first, "closed")]
    again = httpx.post(api(app_stack, f"/operator/reports/{first}/status"), headers=operator,
                       json={"status": "closed"})
    assert again.json() == {"report_id": first, "status": "closed"}  # idempotent

    for method, path, payload, status, code in [
        ("GET", "/operator/reports?status=lost", None, 400, "invalid_field"),
        ("GET", "/operator/reports?limit=0", None, 400, "invalid_field"),
        ("GET", "/operator/reports/r_nothing", None, 404, "report_not_found"),
        ("POST", f"/operator/reports/{second}/status", {"status": "gone"}, 400, "invalid_field"),
        ("POST", "/operator/reports/r_nothing/status", {"status": "closed"}, 404, "report_not_found"),
    ]:
        answer = httpx.request(method, api(app_stack, path), headers=operator, json=payload)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (path, answer.text)


def test_the_operator_deletes_any_message(app_stack: str, provisioned: dict[str, str]) -> None:
    send(PAUL, BOB, "scam link")
    send(BOB, PAUL, "what?")
    operator = bearer(dev_token(app_stack, "op-admin", operator=True))
    answer = httpx.post(api(app_stack, "/operator/delete"), headers=operator, json={"conversation_id": CONV, "seq": 1})
    assert answer.status_code == 200, answer.text
    deleted = answer.json()
    assert (deleted["type"], deleted["seq"], deleted["tombstone_seq"]) == ("deleted", 1, 3)

    table = messages(provisioned)
    original, tombstone = table.get(CONV, 1), table.get(CONV, 3)
    assert original is not None and original.deleted and original.text == ""
    assert tombstone is not None and tombstone.event == {"type": "deleted", "seq": 1, "by": {"kind": "operator"}}
    # both members' pulls reach the tombstone (their copies of the last message moved)
    for member in (BOB, PAUL):  # the real pull path: sync from the start
        connection = services().long_poll.open(member)["connection_id"]
        frames = services().long_poll.send(member, connection, json.dumps(
            {"action": "sync", "id": "s", "since": {CONV: 0}}))
        shown = [(m["seq"], m["text"], m.get("deleted", False), m.get("event")) for f in frames
                 for m in f.get("messages", [])]
        assert shown == [(1, "", True, None), (2, "what?", False, None),
                         (3, "", False, {"type": "deleted", "seq": 1, "by": {"kind": "operator"}})], frames
        frames = services().long_poll.send(member, connection, json.dumps({"action": "conversations", "id": "l"}))
        (entry,) = [c for f in frames for c in f.get("conversations", [])]
        assert entry["last_message"]["event"] == {"type": "deleted", "seq": 1, "by": {"kind": "operator"}}

    repeat = httpx.post(api(app_stack, "/operator/delete"), headers=operator, json={"conversation_id": CONV, "seq": 1})
    assert repeat.json() == deleted and table.last_seq(CONV) == 3  # nothing stored again
    for payload, status, code in [
        ({"conversation_id": CONV, "seq": 3}, 403, "not_deletable"),
        ({"conversation_id": CONV, "seq": 9}, 404, "message_not_found"),
        ({"conversation_id": CONV, "seq": "1"}, 400, "invalid_field"),
        ({"seq": 1}, 400, "invalid_field"),
    ]:
        refused = httpx.post(api(app_stack, "/operator/delete"), headers=operator, json=payload)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), (payload, refused.text)
    assert table.last_seq(CONV) == 3


def test_a_ban_closes_the_open_websocket_and_held_wait_and_refuses_the_identity_until_unbanned(
        long_poll_stack: str, provisioned: dict[str, str]) -> None:
    host = long_poll_stack
    paul = dev_token(host, PAUL.id)
    operator = bearer(dev_token(host, "op-admin", operator=True))

    async def run() -> None:
        async with httpx.AsyncClient(timeout=40) as http, connect(f"ws://{host}/ws?token={paul}") as socket:
            opened = (await http.post(api(host, "/lp/open"), headers=bearer(paul))).json()
            wait = asyncio.ensure_future(http.post(opened["wait_url"], headers=bearer(opened["wait_token"])))
            banned = await http.post(api(host, "/operator/ban"), headers=operator,
                                     json={"identity": PAUL.to_json(), "reason": "scam"})
            assert banned.status_code == 200, banned.text
            assert banned.json()["closed_connections"] == 2

            # the WebSocket: told why, then closed by the server
            told = json.loads(await asyncio.wait_for(socket.recv(), WAIT))
            assert (told["type"], told["code"]) == ("error", "banned")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(socket.recv(), WAIT)
            # the held wait: answered with the same frame (its ring), not left to time out empty
            rings = (await asyncio.wait_for(wait, WAIT)).json()["ReceiveMessageResponse"]["ReceiveMessageResult"]
            bodies = [json.loads(json.loads(m["Body"])["f"]) for m in rings["messages"] or []]
            assert {"type": "error", "code": "banned"}.items() <= bodies[-1].items(), bodies
            # the long-poll connection is gone, and its identity refused wherever a token is read
            for path, payload in [("/lp/poll", {"connection_id": opened["connection_id"], "cursor": 0, "base": 1}),
                                  (f"/lp/send?connection_id={opened['connection_id']}", {"action": "ping"}),
                                  ("/lp/open", {}), ("/identity/me", None), ("/presence", {"identities": []})]:
                answer = await http.request("GET" if payload is None else "POST", api(host, path),
                                            headers=bearer(paul), json=payload)
                assert (answer.status_code, answer.json()["error"]["code"]) == (403, "banned"), (path, answer.text)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}/ws?token={paul}"):
                pass
        assert refused.value.response.status_code == 403
        assert services().router.connections_of(PAUL) == []  # nothing left open or registered

        lookup = httpx.get(api(host, f"/operator/bans/user/{PAUL.id}"), headers=operator).json()
        assert lookup["banned"] is True and lookup["reason"] == "scam" and lookup["by"]["id"] == "op-admin"
        unbanned = httpx.post(api(host, "/operator/unban"), headers=operator, json={"identity": PAUL.to_json()})
        assert unbanned.json() == {"identity": PAUL.to_json(), "banned": False, "was_banned": True}
        async with connect(f"ws://{host}/ws?token={paul}") as socket:
            await socket.send(json.dumps({"action": "ping", "id": "p"}))
            assert json.loads(await asyncio.wait_for(socket.recv(), WAIT))["type"] == "pong"
        assert httpx.post(api(host, "/lp/open"), headers=bearer(paul)).status_code == 201

    asyncio.run(run())


def test_a_connection_opening_after_the_ban_was_stored_is_refused_and_leaves_nothing(app_stack: str,
                                                                                       provisioned: dict[str, str]
                                                                                       ) -> None:
    """The ban's item written, its closing not yet run (the window a ban could miss): the open
    reads the ban after writing its record, so it is refused and undone, on both transports."""
    visitor = httpx.post(api(app_stack, "/identity/visitor")).json()
    who = Identity("visitor", visitor["identity"]["id"])
    bans(provisioned).put(Ban(who, Identity("user", "op-admin"), "", 0))

    async def run() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{app_stack}/ws?token={visitor['token']}"):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(run())
    answer = httpx.post(api(app_stack, "/lp/open"), headers=bearer(visitor["token"]))
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "banned")
    renewed = httpx.post(api(app_stack, "/identity/visitor/renew"), headers=bearer(visitor["token"]))
    assert (renewed.status_code, renewed.json()["error"]["code"]) == (403, "banned")
    assert services().router.connections_of(who) == []


def test_the_command_line_drives_the_same_api(app_stack: str, provisioned: dict[str, str]) -> None:
    """`python -m webim_client.operator` (what `make operator ARGS=...` runs) over the same routes."""
    send(PAUL, BOB, "scam link")
    report_id = file_report(BOB, 1, "cli-1")
    cli = operator_command(app_stack, "op-admin")
    assert [r["report_id"] for r in cli("reports")["reports"]] == [report_id]
    assert cli("report", report_id)["message"]["text"] == "scam link"
    assert cli("delete", CONV, "1")["tombstone_seq"] == 2
    assert cli("ban", "user", PAUL.id, "--reason", "scam")["closed_connections"] == 0
    assert cli("banned", "user", PAUL.id)["banned"] is True
    assert bans(provisioned).get(PAUL) is not None
    assert cli("unban", "user", PAUL.id)["was_banned"] is True
    assert cli("close", report_id) == {"report_id": report_id, "status": "closed"}
    assert cli("reports")["reports"] == []

    plain = ["--api", f"http://{app_stack}/api", "--token", dev_token(app_stack, "plain-user")]
    err = io.StringIO()
    assert operator_cli([*plain, "ban", "user", PAUL.id], err=err) == 1
    assert json.loads(err.getvalue())["error"]["code"] == "not_operator"
    assert bans(provisioned).get(PAUL) is None


def test_only_a_verified_user_token_with_the_claim_true_is_an_operator() -> None:
    """identity.md, Operators: the host site's token with `"webim_operator": true` (JSON true) is
    an operator; the same token without it, with another value, or a visitor's is not (403), and
    a token that fails verification is refused as anywhere (401)."""
    auth = authenticator(dev_login=True)
    assert auth.authenticate_operator(rs_token(claims(webim_operator=True))) == Identity("user", "seller-7")
    for value in (None, False, "true", 1, [True], {"on": True}):
        token = rs_token(claims(**({} if value is None else {"webim_operator": value})))
        assert auth.authenticate(token) == Identity("user", "seller-7")  # an ordinary user all the same
        with pytest.raises(NotOperatorError):
            auth.authenticate_operator(token)
    with pytest.raises(NotOperatorError):
        auth.authenticate_operator(auth.new_visitor().token)
    with pytest.raises(NotOperatorError):
        auth.authenticate_operator(auth.dev_login("plain").token)
    assert auth.authenticate_operator(auth.dev_login("ops", operator=True).token) == Identity("user", "ops")
    forged = rs_token(claims(webim_operator=True))[:-4] + "AAAA"
    with pytest.raises(UnauthorizedError):
        auth.authenticate_operator(forged)
    with pytest.raises(UnauthorizedError):
        auth.authenticate_operator(None)
    # deployed (no dev login), a development operator token is no credential at all
    with pytest.raises(UnauthorizedError):
        authenticator().authenticate_operator(auth.dev_login("ops", operator=True).token)


def test_the_operator_deletes_a_group_message_and_the_members_see_the_tombstone(app_stack: str) -> None:
    """In a group the tombstone goes out by the fan-out job (the SQS source runs it here): a member
    online on a long poll gets the event pushed; history shows the tombstone only."""
    carol = Identity("user", "op-carol")
    send(carol, PAUL, "hi")  # carol wrote to paul: paul may add her (protocol.md §13.2)
    svc = services()
    paul = svc.long_poll.open(PAUL)["connection_id"]
    created = svc.long_poll.send(PAUL, paul, json.dumps({"action": "group_create", "id": "g1", "title": "deals",
                                                         "members": [carol.to_json()]}))
    group = next(f["conversation_id"] for f in created if f.get("conversation_id", "").startswith("g_"))
    sent = svc.long_poll.send(PAUL, paul, json.dumps({"action": "send", "id": "gm1", "conversation_id": group,
                                                      "text": "wire me the money"}))
    seq = next(f["seq"] for f in sent if f.get("type") == "sent")
    listening = svc.long_poll.open(carol)["connection_id"]
    operator = bearer(dev_token(app_stack, "op-admin", operator=True))
    answer = httpx.post(api(app_stack, "/operator/delete"), headers=operator,
                        json={"conversation_id": group, "seq": seq}).json()
    assert answer["type"] == "deleted" and answer["tombstone_seq"] == seq + 1

    def pushed() -> list[Frame]:
        return svc.long_poll.poll(carol, listening, Release(0, 1))["frames"]
    frames = pushed()
    deadline = time.monotonic() + WAIT
    while not any(f.get("seq") == seq + 1 for f in frames):  # the fan-out job runs on the SQS source
        assert time.monotonic() < deadline, frames
        time.sleep(0.05)
        frames = pushed()
    event = next(f for f in frames if f.get("seq") == seq + 1)
    assert event["event"] == {"type": "deleted", "seq": seq, "by": {"kind": "operator"}}
    history = svc.long_poll.send(carol, listening, json.dumps({"action": "history", "id": "h",
                                                                "conversation_id": group}))[0]["messages"]
    shown = {m["seq"]: m for m in history}
    assert shown[seq]["text"] == "" and shown[seq]["deleted"] is True


def test_a_reported_photo_is_shown_to_the_operator_from_the_reports_own_copy(provisioned: dict[str, str]) -> None:
    """The operator deletes a reported photo message: the message's object goes (§16), and the
    report still shows the photo, signed from its own copy under r/ (which the functions' IAM
    policies may read, so the signed URL works on AWS too)."""
    from tests.test_infra_template import _allowed, _media_statements
    from tests.test_media import ALICE as PHOTO_ALICE
    from tests.test_media import BOB as PHOTO_BOB
    from tests.test_media import CONV as PHOTO_CONV
    from tests.test_media import PNG, Person
    from tests.test_media import World as MediaWorld

    world = MediaWorld(provisioned)
    alice, bob = Person(world, PHOTO_ALICE, "ws"), Person(world, PHOTO_BOB, "ws")
    seq = alice.send_photo(alice.upload(PNG))["seq"]
    report_id = bob.ask(action="report", conversation_id=PHOTO_CONV, seq=seq, reason="abuse")["report_id"]
    operator = world.services.operator
    assert operator.delete(Identity("user", "op-admin"), {"conversation_id": PHOTO_CONV, "seq": seq})["seq"] == seq
    assert world.keys("m/") == []  # the message's own object is gone
    shown = operator.report(report_id)
    copy = f"r/{report_id}/{seq}"
    assert f"/{copy}?" in shown["message"]["image"]["url"]  # (its text as reported, in the copy)
    assert world.s3.get_object(Bucket=world.bucket, Key=copy)["Body"].read() == PNG
    for name, stage in (("policy-dev.json", "dev"), ("policy-prod-jobs.json", "prod")):
        assert _allowed(_media_statements(name, stage), "s3:GetObject",
                        f"arn:aws:s3:::webim-test-mediabucket-x/{copy}", None), name


@pytest.mark.parametrize("transport", ["ws", "lp"])
def test_connections_opening_while_the_ban_runs_are_each_refused_or_closed(provisioned: dict[str, str],
                                                                           transport: str) -> None:
    """The race a ban could lose: threads opening connections of the identity without pause, the
    ban landing among them once some are open. Every open before the ban is closed by it, one in
    flight is refused (`banned`, undone) or closed, and every open after it is refused: none is
    left registered. (Each thread stops at its first refusal.)"""
    from tests.doubles import RecordingSender

    svc = Services.from_env({**provisioned, "MAX_CONNECTIONS_PER_IDENTITY": "0", "HANDSHAKE_GRACE_SECONDS": "0"},
                            sender=RecordingSender())
    who = Identity("user", f"op-racer-{transport}")
    workers = 4
    opened: list[str] = []
    refused: list[int] = []
    some_open, stop = threading.Event(), threading.Event()

    def keep_opening(worker: int) -> None:
        for n in itertools.count():
            if stop.is_set():  # the test failed: no thread outlives it
                return
            try:
                if transport == "ws":
                    svc.sessions.open(f"ws-race-{worker}-{n}", who, "http://callback.invalid")
                    opened.append(f"ws-race-{worker}-{n}")
                else:
                    opened.append(svc.long_poll.open(who)["connection_id"])
            except BannedError:
                refused.append(worker)
                return
            if len(opened) >= 2 * workers:
                some_open.set()

    threads = [threading.Thread(target=keep_opening, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    try:
        assert some_open.wait(WAIT)
        answer = svc.operator.ban(Identity("user", "op-admin"), who, "race")
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        stop.set()
    assert sorted(refused) == list(range(workers)) and len(opened) >= 2 * workers
    assert answer["closed_connections"] >= 2 * workers  # at least those open before it began
    svc.router.cache.clear()  # what the table says, not this container's memory
    assert svc.router.connections_of(who) == []
    for connection in opened:
        assert svc.router.lookup(connection) is None, connection


def test_the_benchmark_counts_the_gate_a_ban_an_unban_and_an_operator_delete(provisioned: dict[str, str]) -> None:
    """bench/operator_calls.py (docs/performance.md `operator`): the calls it prices."""
    from bench.operator_calls import measure

    calls = {name: [r.call.split(".")[-1] for r in phase.records] for name, phase in measure(provisioned).items()}
    gate, delete, ban, unban = calls.values()
    assert gate == ["GetItem"] and unban == ["DeleteItem"]  # one read per token; nothing per frame
    assert delete.count("TransactWriteItems") == 1 and delete.count("PostToConnection") == 2  # both members
    # the ban: its item, the connections' Query, the WebSocket's `banned` push, the long poll's close
    assert ban[:2] == ["PutItem", "Query"] and ban.count("PostToConnection") == 1 and "DeleteItem" in ban
