"""The WebSocket side of API Gateway: connect, each text frame and close become
`$connect`, `$default` and `$disconnect` invocations; a refused `$connect` refuses the
handshake. Frames are dispatched concurrently, as API Gateway invokes Lambda per message.

The `keepalive` route is API Gateway's own (a MOCK integration, infra/keepalive_route.json,
installed on AWS by infra/keepalive_route.py): a frame whose `action` is its route key is
taken here as that file says (one-way, as it is: nothing is sent back; with a route response,
the file's template would be), and no Lambda runs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from devstack.connections import ConnectionRegistry, LocalConnection
from devstack.events import (
    WebSocketPeer,
    new_connection_id,
    ws_connect_event,
    ws_disconnect_event,
    ws_message_event,
)
from devstack.invoker import LambdaInvoker

log = logging.getLogger("devstack.websocket")

IDLE_TIMEOUT_SECONDS = 600  # API Gateway closes a connection idle for 10 minutes
MAX_DURATION_SECONDS = 7200  # and any connection after 2 hours
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003  # API Gateway's answer to a binary frame
INVALID_PAYLOAD = 1007  # a text frame that is not UTF-8 (RFC 6455 §8.1: fail the connection)
KEEPALIVE_ROUTE_FILE = Path(__file__).resolve().parent.parent / "infra" / "keepalive_route.json"
DEFAULT_KEY = "$default"
# what the local rendering of a template knows: $context variables (VTL's other constructs are
# refused when the file is read, so a template the emulation cannot follow fails at once)
_CONTEXT_VARIABLE = re.compile(r"\$context\.(requestTimeEpoch|connectionId|routeKey)\b")


@dataclass(frozen=True)
class MockRoute:
    """A route with a MOCK integration, as API Gateway runs it: the request template gives the
    status, which selects the integration response, whose template (chosen by its template
    selection expression) is the answer; it is sent back only if the route has a route
    response (two-way), as on AWS."""

    route_key: str
    answer_template: str | None  # None: a one-way route (no route response), nothing is sent

    def answer(self, connection_id: str, now_ms: int) -> str | None:
        if self.answer_template is None:
            return None
        values = {"requestTimeEpoch": str(now_ms), "connectionId": connection_id, "routeKey": self.route_key}
        return _CONTEXT_VARIABLE.sub(lambda match: values[match.group(1)], self.answer_template)


def _selected(templates: dict[str, str], expression: str | None) -> str:
    """The template a static selection expression picks (`\\$default` is the key `$default`)."""
    key = (expression or DEFAULT_KEY).replace("\\$", "$")
    if key.startswith("$") and key != DEFAULT_KEY:
        raise ValueError(f"the local gateway evaluates only static template selection, not {expression!r}")
    return templates.get(key) or templates[DEFAULT_KEY]


def _static(template: str) -> str:
    if "#" in template or "$" in _CONTEXT_VARIABLE.sub("", template):
        raise ValueError(f"the local gateway renders $context variables only, not {template!r}")
    return template


def load_mock_route(path: Path = KEEPALIVE_ROUTE_FILE) -> MockRoute:
    """The route of infra/keepalive_route.json, checked to be what the emulation can run."""
    data = json.loads(path.read_text())
    integration = data["integration"]
    if integration["IntegrationType"] != "MOCK":
        raise ValueError("the local gateway answers MOCK integrations only")
    status = str(json.loads(_static(_selected(integration["RequestTemplates"],
                                              integration.get("TemplateSelectionExpression"))))["statusCode"])
    response = data["integrationResponse"]
    key = response["IntegrationResponseKey"]  # `$default`, or a /pattern/ the mock's status must match
    if key != DEFAULT_KEY and not re.fullmatch(key.strip("/"), status):
        raise ValueError(f"the mock's status {status} selects no integration response ({key})")
    templates = response.get("ResponseTemplates")  # none: a one-way route has nothing to render
    template = _static(_selected(templates, response.get("TemplateSelectionExpression"))) if templates else None
    two_way = data.get("routeResponse", {}).get("RouteResponseKey") == DEFAULT_KEY \
        and data.get("route", {}).get("RouteResponseSelectionExpression") == DEFAULT_KEY
    if two_way and template is None:
        raise ValueError("a two-way mock route with no response template: what AWS sends is not emulated")
    return MockRoute(route_key=data["routeKey"], answer_template=template if two_way else None)


KEEPALIVE_ROUTE = load_mock_route()


def route_key_of(text: str) -> str | None:
    """`$request.body.action` (chalice's route selection expression) of a frame, if a string."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    action = body.get("action") if isinstance(body, dict) else None
    return action if isinstance(action, str) else None


class WebSocketGateway:
    def __init__(
        self,
        invoker: LambdaInvoker,
        registry: ConnectionRegistry,
        executor: Executor,
        stage: str,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_duration: float = MAX_DURATION_SECONDS,
        mock_routes: tuple[MockRoute, ...] = (KEEPALIVE_ROUTE,),
    ) -> None:
        self._invoker = invoker
        self._registry = registry
        self._executor = executor
        self._stage = stage
        self._idle_timeout = idle_timeout
        self._max_duration = max_duration
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mock_routes = {route.route_key: route for route in mock_routes}

    async def _invoke(self, route_key: str, event: dict[str, Any]) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._invoker.websocket, route_key, event)

    async def handle(self, websocket: WebSocket) -> None:
        peer = WebSocketPeer(
            connection_id=new_connection_id(),
            domain_name=websocket.headers.get("host", "127.0.0.1"),
            stage=self._stage,
            source_ip=websocket.client.host if websocket.client else "127.0.0.1",
            headers={k.lower(): v for k, v in websocket.headers.items()},
            query=parse_qs(websocket.url.query),
        )
        status = await self._invoke("$connect", ws_connect_event(peer))
        if not 200 <= status < 300:
            # API Gateway refuses the handshake with the status the $connect handler returned
            await websocket.send_denial_response(Response(status_code=status))
            return
        # Registered before the 101 goes out: a client that has seen it may be pushed to at once
        # (as on API Gateway); a push meanwhile waits for `opened`.
        connection = LocalConnection(peer, websocket)
        self._registry.add(connection)
        try:
            await websocket.accept()
        except Exception:
            # The client left while `$connect` ran, which registered the connection: the app
            # hears of it through `$disconnect`, as for any other close.
            connection.closing = True
            self._registry.remove(peer.connection_id)
            connection.opened.set()  # a waiting push now fails: gone
            await self._invoke("$disconnect", ws_disconnect_event(peer, GOING_AWAY, "Connection lost"))
            return
        connection.opened.set()
        code, reason = await self._pump(connection)
        connection.closing = True
        self._registry.remove(peer.connection_id)
        await self._invoke("$disconnect", ws_disconnect_event(peer, code, reason))

    async def _pump(self, connection: LocalConnection) -> tuple[int, str]:
        """Forward frames until the client leaves or a limit closes the connection."""
        deadline = time.monotonic() + self._max_duration
        while True:
            idle_left = connection.last_active_at + self._idle_timeout - time.time()
            timeout = min(deadline - time.monotonic(), idle_left)
            try:
                message = await asyncio.wait_for(connection.websocket.receive(), timeout=max(timeout, 0))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    reason = "Going away"
                elif connection.last_active_at + self._idle_timeout <= time.time():
                    reason = "Idle timeout"
                else:
                    continue  # a push kept the connection active
                await _close_quietly(connection.websocket, GOING_AWAY, reason)
                return GOING_AWAY, reason
            except Exception:
                return GOING_AWAY, "Connection lost"
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005), str(message.get("reason") or "")
            text = message.get("text")
            if text is None:
                # API Gateway does not take binary frames: it closes the connection with 1003
                reason = "Binary frames are not supported"
                await _close_quietly(connection.websocket, UNSUPPORTED_DATA, reason)
                return UNSUPPORTED_DATA, reason
            connection.touch()  # any frame, a keepalive too, keeps the connection from idling out
            mock = self._mock_route(text)
            task = asyncio.create_task(
                self._answer_mock(connection, mock) if mock is not None
                else self._invoke("$default", ws_message_event(connection.peer, text))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _mock_route(self, text: str) -> MockRoute | None:
        if not self._mock_routes or not any(key in text for key in self._mock_routes):
            return None  # (no JSON parse for a frame that cannot name one)
        key = route_key_of(text)
        return self._mock_routes.get(key) if key is not None else None

    async def _answer_mock(self, connection: LocalConnection, route: MockRoute) -> None:
        """API Gateway's own answer: no Lambda runs."""
        answer = route.answer(connection.peer.connection_id, int(time.time() * 1000))
        if answer is not None and not connection.closing:
            try:
                await connection.send_text(answer)
            except Exception:  # the client left meanwhile
                log.debug("mock answer after the peer left", exc_info=True)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason)
    except Exception:  # already closed by the peer
        log.debug("close after peer left", exc_info=True)


class Utf8CheckedProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-io WebSocket protocol, failing a text frame that is not valid UTF-8 as
    RFC 6455 (§8.1) asks and as API Gateway does: the connection is closed with 1007 and the
    frame never reaches a route (so `$default` is not invoked; `$disconnect` is, with 1007).
    uvicorn closes with 1007 too, but logs a traceback for each such frame (a client can fill
    the log with them): this closes first and logs one line. API Gateway documents no answer
    of its own for this; 1007 is what the RFC prescribes (protocol.md §2 says so)."""

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode("utf-8")
            except UnicodeDecodeError:
                self.frames = []
                log.info("a text frame that is not UTF-8: connection closed with %d", INVALID_PAYLOAD)
                self.conn.send_close(INVALID_PAYLOAD, "Invalid UTF-8 in a text frame")
                self.handle_parser_exception()  # tells the app (websocket.disconnect) and closes
                return
        super().send_receive_event_to_app()
