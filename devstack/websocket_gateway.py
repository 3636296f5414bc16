"""The WebSocket side of API Gateway: connect, each text frame and close become
`$connect`, `$default` and `$disconnect` invocations; a refused `$connect` refuses the
handshake. Frames are dispatched concurrently, as API Gateway invokes Lambda per message.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
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


class WebSocketGateway:
    def __init__(
        self,
        invoker: LambdaInvoker,
        registry: ConnectionRegistry,
        executor: Executor,
        stage: str,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_duration: float = MAX_DURATION_SECONDS,
    ) -> None:
        self._invoker = invoker
        self._registry = registry
        self._executor = executor
        self._stage = stage
        self._idle_timeout = idle_timeout
        self._max_duration = max_duration
        self._tasks: set[asyncio.Task[Any]] = set()

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
            connection.touch()
            task = asyncio.create_task(
                self._invoke("$default", ws_message_event(connection.peer, text))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


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
