"""Routing: registers connections and pushes frames to them, dropping the dead ones."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib import observability
from chalicelib.errors import ConnectionGoneError
from chalicelib.principal import Identity
from chalicelib.routing.sender import FrameSender
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable


def encode_frame(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _RecordCache:
    """Connection id -> record, per container. Safe to cache: API Gateway never reuses a
    connection id and a connection's identity never changes; entries expire with the record.
    Saves the GetItem that every frame would otherwise start with."""

    def __init__(self, size: int = 10_000) -> None:
        self._records: OrderedDict[str, ConnectionRecord] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, connection_id: str, now: float) -> ConnectionRecord | None:
        with self._lock:
            record = self._records.get(connection_id)
            if record is not None and record.expires_at <= now:
                del self._records[connection_id]
                return None
            return record

    def put(self, record: ConnectionRecord) -> None:
        with self._lock:
            self._records[record.connection_id] = record
            self._records.move_to_end(record.connection_id)
            if len(self._records) > self._size:
                self._records.popitem(last=False)

    def drop(self, connection_id: str) -> None:
        with self._lock:
            self._records.pop(connection_id, None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class Router:
    def __init__(
        self,
        connections: ConnectionsTable,
        sender: FrameSender,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
        long_poll_sender: FrameSender | None = None,
        handshake_grace_seconds: float = 0,
    ) -> None:
        self._connections = connections
        # A connection is registered during `$connect`, before API Gateway lets anyone post to
        # it: a 410 in those first seconds means "not open yet", not "gone".
        self._handshake_grace = handshake_grace_seconds
        self._senders: dict[str, FrameSender] = {"ws": sender}
        if long_poll_sender is not None:
            self._senders["lp"] = long_poll_sender
        self._ttl = ttl_seconds
        self._clock = clock
        self.cache = _RecordCache()

    def register(self, connection_id: str, identity: Identity, endpoint: str,
                 transport: str = "ws", ttl_seconds: int | None = None, live_seconds: int | None = None
                 ) -> ConnectionRecord:
        record = self.new_record(connection_id, identity, endpoint, transport, ttl_seconds, live_seconds)
        self.add(record)
        return record

    def new_record(self, connection_id: str, identity: Identity, endpoint: str,
                   transport: str = "ws", ttl_seconds: int | None = None, live_seconds: int | None = None
                   ) -> ConnectionRecord:
        """The record `register` writes, not yet written (so a caller can undo a write that
        died half-way: it knows the keys before the call)."""
        now = self._clock()
        expires_at = int(now) + (ttl_seconds or self._ttl)
        return ConnectionRecord(
            connection_id=connection_id,
            identity=identity,
            endpoint=endpoint,
            connected_at=now,
            expires_at=expires_at,
            transport=transport,
            live_until=int(now) + live_seconds if live_seconds else expires_at,
        )

    def add(self, record: ConnectionRecord) -> None:
        self._connections.put(record)
        self.cache.put(record)

    def refresh(self, record: ConnectionRecord, ttl_seconds: int) -> ConnectionRecord | None:
        """Extend a connection's life (a long poll's, at every poll) to `ttl_seconds` from now,
        never shortening it. None if it is gone: a refresh racing its close re-creates nothing."""
        until = self._connections.extend(record, int(self._clock()) + ttl_seconds)
        if until is None:
            self.cache.drop(record.connection_id)
            return None
        fresh = replace(record, expires_at=until, live_until=until)
        self.cache.put(fresh)
        return fresh

    def lookup(self, connection_id: str) -> ConnectionRecord | None:
        record = self.cache.get(connection_id, self._clock())
        if record is None:
            record = self._connections.get(connection_id)
            if record is not None:
                self.cache.put(record)
        return record

    def stored_ids(self, connection_ids: list[str]) -> set[str]:
        """Which of these connections the table holds now, unexpired (never the cache: for
        sweepers, which must not trust a record another container may have deleted)."""
        return self._connections.existing(connection_ids)

    def heartbeat(self, record: ConnectionRecord, live_seconds: int) -> ConnectionRecord:
        """The connection proved it is alive: it counts for presence `live_seconds` more.
        Raises ConnectionGoneError (changing nothing) if it was closed meanwhile, say by a
        `$disconnect` handled in another container while this ping was on its way."""
        fresh = replace(record, live_until=int(self._clock()) + live_seconds)
        if not self._connections.touch(fresh, fresh.live_until):
            self.cache.drop(record.connection_id)
            raise ConnectionGoneError("this connection is closed; reconnect")
        self.cache.put(fresh)
        return fresh

    def unregister(self, record: ConnectionRecord) -> None:
        self.cache.drop(record.connection_id)
        self._connections.delete(record)

    def forget(self, record: ConnectionRecord) -> None:
        """Close a connection the server believes gone, then drop its record: a record dropped
        while the socket stays open would leave it deaf (pushes skip it) and mute (its frames
        find no record), so the record goes only once the close is done. On a connection that
        really is gone the close is a no-op (410 on DELETE, a mailbox already deleted); a long
        poll's next poll then answers `connection_gone`, a WebSocket client sees the close.
        A close that fails keeps the record: the next push meets the 410 and tries again."""
        if not self.close(record):
            return
        self.unregister(record)
        observability.event("connection_forgotten", to_connection=record.connection_id,
                            to_identity=record.identity.key)

    def close(self, record: ConnectionRecord) -> bool:
        """Close a connection through its transport (DELETE @connections/{id}, or the long
        poll's mailbox and doorbell). Whether it is closed (or was gone already); a failure
        is logged."""
        try:
            self._senders[record.transport].close(record.endpoint, record.connection_id)
        except Exception as error:
            observability.event("close_failed", logging.WARNING, to_connection=record.connection_id,
                                error=type(error).__name__)
            return False
        return True

    def push(self, record: ConnectionRecord, frame: dict[str, Any]) -> bool:
        """Send one frame; on 410 forget the connection. Returns whether it was delivered.

        A failed push never loses data: whatever the frame carries stays stored for pull.
        """
        try:
            self._senders[record.transport].send(record.endpoint, record.connection_id, encode_frame(frame))
        except ConnectionGoneError:
            forget = self._clock() - record.connected_at >= self._handshake_grace
            observability.push_gone(record.connection_id, record.identity.key, frame, forget)
            if forget:
                self.forget(record)
            return False
        observability.pushed(record.connection_id, record.identity.key, frame)
        return True

    def refuse(self, endpoint: str, connection_id: str, frame: dict[str, Any]) -> None:
        """Answer a WebSocket connection that has no record with `frame`, then close it (it
        cannot act as anyone). Best effort: gone already is fine, a failure is logged."""
        sender = self._senders["ws"]
        try:
            sender.send(endpoint, connection_id, encode_frame(frame))
        except ConnectionGoneError:
            return
        except Exception as error:
            observability.event("refuse_failed", logging.WARNING, to_connection=connection_id,
                                error=type(error).__name__)
        try:
            sender.close(endpoint, connection_id)
        except Exception as error:
            observability.event("close_failed", logging.WARNING, to_connection=connection_id,
                                error=type(error).__name__)

    def connections_of(self, identity: Identity) -> list[ConnectionRecord]:
        return self._connections.list_for(identity)

    def push_all(self, records: list[ConnectionRecord], frame: dict[str, Any]) -> int:
        return sum(self.push(record, frame) for record in records)

    def push_to(self, identity: Identity, frame: dict[str, Any]) -> int:
        """Send a frame to every live connection of an identity; returns how many received it."""
        return self.push_all(self._connections.list_for(identity), frame)
