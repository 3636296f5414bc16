"""The WebSocket `keepalive` route (protocol.md §6.1a): taken by API Gateway itself and not
answered (a one-way route: 1 billed message), from one definition (infra/keepalive_route.json)
that the deploy step installs and the local gateway runs; and the clients' two clocks (a
keepalive after silence, sent and forgotten; the presence ping every heartbeat, whose pong proves
the line)."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from devstack import websocket_gateway
from devstack.connections import ConnectionRegistry
from devstack.invoker import LambdaInvoker
from devstack.server import HANDLER_THREADS, build_asgi
from infra import keepalive_route
from tests import recording_app
from tests.conftest import free_port
from tests.harness import serve_in_thread
from tests.test_chaos_soak import app_stack
from webim_client import Client
from webim_client.client import HEARTBEAT_SECONDS, KEEPALIVE_SECONDS, LineTimer

__all__ = ["app_stack"]  # the fixture: the product's app behind the local gateway

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = json.loads((ROOT / "infra" / "keepalive_route.json").read_text())
KEEPALIVE_FRAME = json.dumps({"action": "keepalive"})
Frame = dict[str, Any]


# --- the one definition, on AWS --------------------------------------------------------------


class RecordingApiGatewayV2:
    """moto's apigatewayv2 client, every call recorded; CreateDeployment (which moto lacks,
    tests/deploy_rehearsal.py shim 4) answered here."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(**params: Any) -> Any:
            self.calls.append((name, params))
            if name == "create_deployment":
                return {"DeploymentId": f"d{len(self.calls)}", "DeploymentStatus": "DEPLOYED"}
            return getattr(self._client, name)(**params)
        return call

    def made(self, name: str) -> list[dict[str, Any]]:
        return [params for called, params in self.calls if called == name]


def chalice_websocket_api(client: Any) -> str:
    """An API as chalice makes it: route selection on the body's action, its three routes."""
    api_id = str(client.create_api(Name="webim-dev-websocket-api", ProtocolType="WEBSOCKET",
                                   RouteSelectionExpression="$request.body.action")["ApiId"])
    for key in ("$connect", "$default", "$disconnect"):
        integration = client.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                                IntegrationUri="arn:aws:lambda:us-east-1:123456789012:function:f")
        client.create_route(ApiId=api_id, RouteKey=key, RouteResponseSelectionExpression="$default",
                            Target=f"integrations/{integration['IntegrationId']}")
    return api_id


def chalice_redeploys(client: Any, api_id: str) -> None:
    """What `chalice deploy` does to an existing WebSocket API (planner._plan_websocketapi):
    every route and integration deleted, its own made again."""
    for route in client.get_routes(ApiId=api_id)["Items"]:
        client.delete_route(ApiId=api_id, RouteId=route["RouteId"])
    for integration in client.get_integrations(ApiId=api_id)["Items"]:
        client.delete_integration(ApiId=api_id, IntegrationId=integration["IntegrationId"])
    for key in ("$connect", "$default", "$disconnect"):
        integration = client.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                                IntegrationUri="arn:aws:lambda:us-east-1:123456789012:function:f")
        client.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration['IntegrationId']}")


def keepalive_state(client: Any, api_id: str) -> list[dict[str, Any]]:
    """Each keepalive route on the API, read back: its route, integration and responses."""
    found = []
    for route in client.get_routes(ApiId=api_id)["Items"]:
        if route["RouteKey"] != DEFINITION["routeKey"]:
            continue
        integration_id = route["Target"].removeprefix("integrations/")
        found.append({
            "route": route,
            "integration": client.get_integration(ApiId=api_id, IntegrationId=integration_id),
            "integration_responses": client.get_integration_responses(ApiId=api_id,
                                                                      IntegrationId=integration_id)["Items"],
        })
    return found


def test_the_definition_is_a_one_way_mock() -> None:
    """The keepalive is not answered (1 billed message, not 2): no route response, and no route
    response selection that would make the route two-way; the MOCK integration's request
    template gives the status its `$default` integration response takes."""
    assert "routeResponse" not in DEFINITION
    assert "RouteResponseSelectionExpression" not in DEFINITION["route"]
    assert DEFINITION["integration"]["IntegrationType"] == "MOCK"
    assert json.loads(DEFINITION["integration"]["RequestTemplates"]["$default"]) == {"statusCode": 200}
    assert DEFINITION["integrationResponse"]["IntegrationResponseKey"] == "$default"


def test_the_deploy_step_installs_exactly_the_definition_after_every_chalice_deploy(aws: None) -> None:
    """The calls carry the file's parts unchanged (no route response: the file has none); what
    the API holds afterwards is the file; a second run (and a chalice redeploy, which deletes the
    route) leaves exactly one."""
    moto = boto3.client("apigatewayv2", region_name="us-east-1")
    client = RecordingApiGatewayV2(moto)
    api_id = chalice_websocket_api(moto)

    route_id = keepalive_route.install(client, api_id, "api")

    (integration,) = client.made("create_integration")
    assert integration == {"ApiId": api_id, **DEFINITION["integration"]}
    (integration_response,) = client.made("create_integration_response")
    assert {k: v for k, v in integration_response.items() if k not in ("ApiId", "IntegrationId")} == \
        DEFINITION["integrationResponse"]
    (route,) = client.made("create_route")
    assert route == {"ApiId": api_id, "RouteKey": DEFINITION["routeKey"], **DEFINITION["route"],
                     "Target": f"integrations/{integration_response['IntegrationId']}"}
    assert client.made("create_route_response") == []  # one-way: API Gateway sends nothing back
    (deployment,) = client.made("create_deployment")
    assert deployment["StageName"] == "api"

    (state,) = keepalive_state(moto, api_id)
    for key, value in DEFINITION["integration"].items():
        assert state["integration"][key] == value, key
    (stored_response,) = state["integration_responses"]
    for key, value in DEFINITION["integrationResponse"].items():
        assert stored_response[key] == value, key
    assert not state["route"].get("RouteResponseSelectionExpression")
    assert moto_route_response_ids(api_id, route_id) == []

    keepalive_route.install(client, api_id, "api")  # run again: still exactly one
    assert len(keepalive_state(moto, api_id)) == 1
    chalice_redeploys(moto, api_id)
    assert keepalive_state(moto, api_id) == []  # why the step runs after every deploy
    keepalive_route.install(client, api_id, "api")
    assert len(keepalive_state(moto, api_id)) == 1
    assert len(client.made("create_deployment")) == 3  # each run deploys the stage
    assert {r["RouteKey"] for r in moto.get_routes(ApiId=api_id)["Items"]} == {
        "$connect", "$default", "$disconnect", DEFINITION["routeKey"]}


def test_the_deploy_step_follows_the_file_also_to_a_two_way_route(aws: None) -> None:
    """Not a fixed one-way install: a definition with a route response gets it (so the step
    follows the file whichever way it says)."""
    moto = boto3.client("apigatewayv2", region_name="us-east-1")
    client = RecordingApiGatewayV2(moto)
    api_id = chalice_websocket_api(moto)
    two_way = replace(keepalive_route.load(), route={"RouteResponseSelectionExpression": "$default"},
                      route_response={"RouteResponseKey": "$default"})

    route_id = keepalive_route.install(client, api_id, "api", two_way)

    assert client.made("create_route_response") == [
        {"ApiId": api_id, "RouteId": route_id, "RouteResponseKey": "$default"}]
    assert len(moto_route_response_ids(api_id, route_id)) == 1
    (state,) = keepalive_state(moto, api_id)
    assert state["route"]["RouteResponseSelectionExpression"] == "$default"


def moto_route_response_ids(api_id: str, route_id: str) -> list[str]:
    """The route's responses (moto has no GetRouteResponses: its model holds them)."""
    from moto.apigatewayv2.models import apigatewayv2_backends  # noqa: PLC0415

    route = apigatewayv2_backends["123456789012"]["us-east-1"].apis[api_id].routes[route_id]
    return [str(response_id) for response_id in route.route_responses]


# --- the one definition, on the local stack --------------------------------------------------


def test_the_local_gateway_answers_what_the_definition_says(tmp_path: Path) -> None:
    """The file's route is one-way: the local gateway answers nothing. The same file with a
    route response (and a template to send): the template is the answer, as on AWS."""
    route = websocket_gateway.load_mock_route()
    assert route.route_key == DEFINITION["routeKey"]
    assert route.answer("c1", 1) is None
    assert websocket_gateway.KEEPALIVE_ROUTE == route  # what the gateway runs by default

    two_way = json.loads(json.dumps(DEFINITION))
    two_way["route"]["RouteResponseSelectionExpression"] = "$default"
    two_way["routeResponse"] = {"RouteResponseKey": "$default"}
    two_way["integrationResponse"]["ResponseTemplates"] = {
        "$default": '{"type": "keepalive", "at": $context.requestTimeEpoch}'}
    path = tmp_path / "route.json"
    path.write_text(json.dumps(two_way))
    assert websocket_gateway.load_mock_route(path).answer("c1", 7) == '{"type": "keepalive", "at": 7}'


def test_the_local_gateway_refuses_a_definition_it_cannot_emulate(tmp_path: Path) -> None:
    """A template with VTL beyond $context (even on a one-way route), another integration type,
    a status no integration response takes, or a two-way route with nothing to send: refused."""
    path = tmp_path / "route.json"
    two_way_bare = {"route": {"RouteResponseSelectionExpression": "$default"},
                    "routeResponse": {"RouteResponseKey": "$default"}}
    for change in ({"integrationResponse": {"IntegrationResponseKey": "$default",
                                            "ResponseTemplates": {"$default": '{"n": $input.body}'}}},
                   {"integration": {**DEFINITION["integration"], "IntegrationType": "AWS_PROXY"}},
                   {"integrationResponse": {"IntegrationResponseKey": "/5\\d\\d/"}},
                   two_way_bare):
        path.write_text(json.dumps({**DEFINITION, **change}))
        with pytest.raises(ValueError):
            websocket_gateway.load_mock_route(path)


class RecordingExecutor(ThreadPoolExecutor):
    """The gateway's executor, noting each Lambda invocation's route key when it is handed over
    (synchronously, in frame order)."""

    def __init__(self) -> None:
        super().__init__(max_workers=HANDLER_THREADS)
        self.invoked: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if getattr(fn, "__name__", "") == "websocket":
            self.invoked.append(str(args[0]))
        return super().submit(fn, *args, **kwargs)


def recording_gateway(executor: RecordingExecutor, idle_timeout: float = 600) -> Iterator[str]:
    import os  # noqa: PLC0415

    recording_app.reset()
    port = free_port()
    os.environ["CALLBACK_URL"] = f"http://127.0.0.1:{port}"
    asgi = build_asgi(LambdaInvoker(recording_app.app), ConnectionRegistry(), executor, frontend=None,
                      idle_timeout=idle_timeout)
    try:
        with serve_in_thread(asgi, port) as host:
            yield host
    finally:
        recording_app.release_holds.set()
        executor.shutdown(wait=True)


def test_a_keepalive_gets_no_answer_from_the_local_gateway_and_runs_no_lambda(aws: None) -> None:
    """The gateway takes frames in order and would send a mock's answer before any Lambda's: the
    first frame back after keepalive, hello is hello's echo, so the keepalive got nothing."""
    executor = RecordingExecutor()
    for host in recording_gateway(executor):
        async def scenario(host: str = host) -> list[Frame]:
            async with connect(f"ws://{host}/ws") as ws:
                back = []
                for word in ("hello", "again"):
                    await ws.send(KEEPALIVE_FRAME)
                    await ws.send(word)
                    back.append(json.loads(await ws.recv()))
                return back

        assert [frame.get("echo") for frame in asyncio.run(scenario())] == ["hello", "again"]
        assert executor.invoked[:3] == ["$connect", "$default", "$default"]  # the words only (then $disconnect)
        assert executor.invoked.count("$default") == 2
        assert [event["body"] for name, event in recording_app.events if name == "message"] == ["hello", "again"]


def test_other_frames_still_reach_the_lambda(aws: None) -> None:
    """Only a frame whose action is the route key: `keepalive` in a text, another action, or a
    frame that is no JSON go to `$default` as before."""
    executor = RecordingExecutor()
    frames = ['{"action": "ping", "note": "keepalive"}', "keepalive", '["keepalive"]', '{"action": "keepalives"}']
    for host in recording_gateway(executor):
        async def scenario(host: str = host) -> list[str]:
            async with connect(f"ws://{host}/ws") as ws:
                for frame in frames:
                    await ws.send(frame)
                return sorted([json.loads(await ws.recv())["echo"] for _ in frames])

        assert asyncio.run(scenario()) == sorted(frames)
        assert executor.invoked.count("$default") == len(frames)


def test_a_keepalive_counts_for_the_idle_timer(aws: None) -> None:
    """A connection that sends only keepalives outlives the idle limit many times over, hearing
    nothing at all; once they stop it is closed as idle (the close is the first thing it hears)."""
    executor = RecordingExecutor()
    for host in recording_gateway(executor, idle_timeout=1.5):
        async def scenario(host: str = host) -> tuple[int, int | None]:
            sent = 0
            async with connect(f"ws://{host}/ws") as ws:
                for _ in range(10):  # 10 x 0.4 s: well past 1.5 s of idle limit
                    await asyncio.sleep(0.4)
                    await ws.send(KEEPALIVE_FRAME)  # raises if the gateway had closed the connection
                    sent += 1
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()  # now silent: the idle limit closes it; an answer would come first
                return sent, closed.value.rcvd.code if closed.value.rcvd else None

        assert asyncio.run(scenario()) == (10, 1001)
        assert executor.invoked.count("$default") == 0


# --- the clients' clocks ---------------------------------------------------------------------


def test_the_line_timer_keeps_alive_only_when_silent_and_pings_every_heartbeat() -> None:
    line = LineTimer(keepalive=540, heartbeat=2160)
    line.sent("ping", 0)  # the opening ping
    assert line.due(539) is None and line.wait(0) == 540
    assert line.due(540) == "keepalive"
    line.sent("send", 500)  # a frame went out: the keepalive waits for silence again
    assert line.due(1039) is None and line.due(1040) == "keepalive"
    for now in (1040, 1580, 2120):
        line.sent("keepalive", now)
    assert line.wait(2120) == 40 and line.due(2160) == "ping"  # the heartbeat, whatever else was sent
    line.sent("ping", 2160)
    assert line.due(2699) is None and line.due(2700) == "keepalive"  # a ping is a frame too
    assert LineTimer(keepalive=None, heartbeat=None).wait(0) is None


def test_the_defaults_match_in_both_clients_and_the_protocol() -> None:
    """540 s (the 10-minute idle limit less a minute) and 4 of them; JS derives the keepalive from
    config.json's idleSeconds."""
    source = (ROOT / "frontend" / "lib" / "connection.js").read_text()
    js = {name: int(value.replace("_", "")) for name, value in
          re.findall(r"export const (KEEPALIVE_MS|HEARTBEAT_MS) = ([\d_]+)", source)}
    assert js == {"KEEPALIVE_MS": KEEPALIVE_SECONDS * 1000, "HEARTBEAT_MS": HEARTBEAT_SECONDS * 1000}
    assert (KEEPALIVE_SECONDS, HEARTBEAT_SECONDS) == (600 - 60, 4 * 540)
    from chalicelib.settings import Settings  # noqa: PLC0415

    assert Settings.presence_window_seconds > HEARTBEAT_SECONDS  # a heartbeat comes before the window ends


class LineServer:
    """A transport whose server answers ping (pong) unless `deaf`, and a keepalive never, as API
    Gateway's one-way route; counts opens, and notes the open each frame went out on. A new
    line hears again. `kind` as the transport says."""

    def __init__(self, kind: str = "websocket") -> None:
        self.kind = kind
        self.sent: list[Frame] = []
        self.lines: list[int] = []  # the open each frame in `sent` went out on
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.opens = 0
        self.deaf = False
        self.changed = asyncio.Event()

    async def open(self) -> None:
        self.opens += 1
        self.deaf = False
        self.frames = asyncio.Queue()

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)
        self.lines.append(self.opens)
        self.changed.set()
        if frame["action"] == "ping" and not self.deaf:
            await self.frames.put({"type": "pong", "v": 4, "time": 1, "identity": {"kind": "user", "id": "a"},
                                   "ref": frame["id"]})

    async def receive(self) -> Frame:
        frame = await self.frames.get()
        if frame is None:
            raise ConnectionError("closed")
        return frame

    async def close(self) -> None:
        await self.frames.put(None)

    def actions(self) -> list[str]:
        return [f["action"] for f in self.sent]

    async def until(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


def test_the_sdk_sends_keepalives_when_silent_and_waits_for_no_answer() -> None:
    """Nothing answers them: well past the request timeout and the reconnect's backoff, the line
    is the first one, and every keepalive went out on it, without an id."""
    async def scenario() -> tuple[list[Frame], int, int, int]:
        server = LineServer()
        client = Client(server, keepalive=0.05, heartbeat=None, request_timeout=0.1, reconnect=True,
                        backoff=(0.01, 0.05))
        await client.start(pull=False)
        await server.until(lambda: server.actions().count("keepalive") >= 8)  # 8 x 0.05 s: 4 timeouts
        await client.close()
        return server.sent, server.opens, client.reconnects, client.keepalives

    sent, opens, reconnects, keepalives = asyncio.run(scenario())
    assert sent[0]["action"] == "ping" and all(frame == {"action": "keepalive"} for frame in sent[1:])
    assert opens == 1 and reconnects == 0 and keepalives == len(sent) - 1


def test_the_sdk_pings_every_heartbeat_and_keeps_alive_between() -> None:
    async def scenario() -> list[str]:
        server = LineServer()
        client = Client(server, keepalive=0.05, heartbeat=0.3)
        await client.start(pull=False)
        await server.until(lambda: server.actions().count("ping") >= 3)
        await client.close()
        return server.actions()

    actions = asyncio.run(scenario())
    pings = [i for i, action in enumerate(actions) if action == "ping"]
    assert all(pings[k + 1] - pings[k] > 1 for k in range(len(pings) - 1))  # keepalives in between


def test_an_unanswered_heartbeat_ends_the_line_and_the_sdk_reconnects() -> None:
    """A line gone deaf after its open: the keepalives go on unanswered (and end nothing); the
    heartbeat's ping is unanswered within the request timeout, and the SDK reconnects."""
    async def scenario() -> tuple[list[str], int]:
        server = LineServer()
        client = Client(server, keepalive=0.05, heartbeat=0.6, request_timeout=0.2, reconnect=True,
                        backoff=(0.01, 0.05))
        await client.start(pull=False)
        server.deaf = True
        await asyncio.wait_for(_until(lambda: client.reconnects >= 1), 20)
        await client.close()
        first = [frame["action"] for frame, line in zip(server.sent, server.lines, strict=True) if line == 1]
        return first, server.opens

    first_line, opens = asyncio.run(scenario())
    assert opens >= 2
    # the opening ping, keepalives (unanswered, ending nothing), the heartbeat's ping (unanswered:
    # the line is closed; a keepalive may still leave before the reader sees the close)
    pings = [i for i, action in enumerate(first_line) if action == "ping"]
    assert pings[0] == 0 and len(pings) == 2 and pings[1] >= 4
    assert {action for action in first_line if action != "ping"} == {"keepalive"}


def test_on_long_poll_the_sdk_pings_instead_of_keepalive_frames() -> None:
    async def scenario() -> list[str]:
        server = LineServer(kind="longpoll")
        client = Client(server, keepalive=0.05, heartbeat=None)
        await client.start(pull=False)
        await server.until(lambda: len(server.sent) >= 3)
        await client.close()
        return server.actions()

    assert set(asyncio.run(scenario())) == {"ping"}


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_against_the_app_the_sdk_keeps_a_silent_line_with_keepalives_nothing_answers(app_stack: str) -> None:
    """The product's app behind the local gateway: a silent client's keepalives are taken by the
    gateway (the app would answer `unknown_action`), nothing comes back, the line stays past many
    request timeouts, and every frame it sent after the opening ping is a keepalive."""
    import httpx  # noqa: PLC0415

    from tests.test_chaos_soak import dev_token  # noqa: PLC0415
    from webim_client import FaultyTransport, WebSocketTransport  # noqa: PLC0415

    async def scenario() -> tuple[int, int, list[str], list[Frame]]:
        sent: list[Frame] = []
        heard: list[Frame] = []
        async with httpx.AsyncClient() as http:
            token = await dev_token(http, app_stack, "keeper")
        transport = FaultyTransport(WebSocketTransport(f"ws://{app_stack}/ws?token={token}"),
                                    drop_out=lambda frame: sent.append(frame) or False,
                                    drop_in=lambda frame: heard.append(frame) or False)
        client = Client(transport, keepalive=0.1, heartbeat=None, request_timeout=0.3, reconnect=True,
                        backoff=(0.01, 0.05))
        await client.start(pull=False)
        await asyncio.wait_for(_until(lambda: client.keepalives >= 12), 60)  # 12 x 0.1 s: 4 timeouts
        await client.request("ping")  # the line still answers; everything before it has been heard
        await client.close()
        return client.keepalives, client.reconnects, [f["action"] for f in sent], heard

    sent_keepalives, reconnects, actions, heard = asyncio.run(scenario())
    assert sent_keepalives >= 12 and reconnects == 0
    assert actions[0] == "ping" and set(actions[1:]) <= {"keepalive", "ack", "ping"}
    assert [frame["type"] for frame in heard] == ["pong", "pong"]  # nothing answered a keepalive
