"""The open local WebSockets, by connection id: what the callback API sends to and closes."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from devstack.events import WebSocketPeer


@dataclass
class LocalConnection:
    peer: WebSocketPeer
    websocket: WebSocket
    last_active_at: float = field(default_factory=time.time)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closing: bool = False
    # the server's loop (the connection is registered there): in-process callback calls run on it
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    # set once the handshake's 101 is sent: the connection is registered before it (a client that
    # saw the 101 may be pushed to at once, as on API Gateway), and sends wait for it
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_active_at = time.time()

    async def send_text(self, data: str) -> None:
        await self.opened.wait()
        async with self.send_lock:  # one writer at a time on a socket
            await self.websocket.send_text(data)
        self.touch()


class ConnectionRegistry:
    def __init__(self) -> None:
        self._connections: dict[str, LocalConnection] = {}
        self._lock = threading.Lock()

    def add(self, connection: LocalConnection) -> None:
        with self._lock:
            self._connections[connection.peer.connection_id] = connection

    def get(self, connection_id: str) -> LocalConnection | None:
        with self._lock:
            connection = self._connections.get(connection_id)
        return None if connection is None or connection.closing else connection

    def remove(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)
