"""Routing: registers connections and pushes frames to them, dropping the dead ones."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ConnectionGoneError
from chalicelib.principal import Identity
from chalicelib.routing.sender import FrameSender
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable


def encode_frame(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Router:
    def __init__(
        self,
        connections: ConnectionsTable,
        sender: FrameSender,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connections = connections
        self._sender = sender
        self._ttl = ttl_seconds
        self._clock = clock

    def register(self, connection_id: str, identity: Identity, endpoint: str,
                 transport: str = "ws") -> ConnectionRecord:
        now = self._clock()
        record = ConnectionRecord(
            connection_id=connection_id,
            identity=identity,
            endpoint=endpoint,
            connected_at=now,
            expires_at=int(now) + self._ttl,
            transport=transport,
        )
        self._connections.put(record)
        return record

    def lookup(self, connection_id: str) -> ConnectionRecord | None:
        return self._connections.get(connection_id)

    def unregister(self, record: ConnectionRecord) -> None:
        self._connections.delete(record)

    def push(self, record: ConnectionRecord, frame: dict[str, Any]) -> bool:
        """Send one frame; on 410 forget the connection. Returns whether it was delivered.

        A failed push never loses data: whatever the frame carries stays stored for pull.
        """
        try:
            self._sender.send(record.endpoint, record.connection_id, encode_frame(frame))
            return True
        except ConnectionGoneError:
            self._connections.delete(record)
            return False

    def connections_of(self, identity: Identity) -> list[ConnectionRecord]:
        return self._connections.list_for(identity)

    def push_all(self, records: list[ConnectionRecord], frame: dict[str, Any]) -> int:
        return sum(self.push(record, frame) for record in records)

    def push_to(self, identity: Identity, frame: dict[str, Any]) -> int:
        """Send a frame to every live connection of an identity; returns how many received it."""
        return self.push_all(self._connections.list_for(identity), frame)
