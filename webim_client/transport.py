"""Transports: how frames travel. The client knows only `send`, `receive` and `close`."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect

Frame = dict[str, Any]


class Transport(Protocol):
    async def open(self) -> None: ...

    async def send(self, frame: Frame) -> None: ...

    async def receive(self) -> Frame:
        """The next frame from the server; raises ConnectionError when the line is gone."""

    async def close(self) -> None: ...


class WebSocketTransport:
    kind = "websocket"  # the client keeps it alive with `keepalive` frames (protocol.md §6.1)

    def __init__(self, url: str) -> None:
        self._url = url
        self._ws: ClientConnection | None = None

    async def open(self) -> None:
        self._ws = await connect(self._url, max_size=128 * 1024)

    async def send(self, frame: Frame) -> None:
        assert self._ws is not None
        # raw UTF-8, as protocol.md asks: \u escapes would count 6-12 bytes a character against
        # the frame limit (a 4,000-emoji text would be refused as too large)
        await self._ws.send(json.dumps(frame, ensure_ascii=False))

    async def receive(self) -> Frame:
        assert self._ws is not None
        try:
            text = await self._ws.recv()
        except Exception as error:  # closed, reset: the client decides what to do
            raise ConnectionError(str(error)) from error
        frame: Frame = json.loads(text)
        return frame

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class FaultyTransport:
    """Wraps a transport and drops or duplicates frames a test chooses (lost msg:A, msg:N,
    ack:R ...), and cuts the connection on demand (`cut`)."""

    def __init__(self, inner: Transport, drop_in: Callable[[Frame], bool] | None = None,
                 drop_out: Callable[[Frame], bool] | None = None,
                 duplicate_in: Callable[[Frame], bool] | None = None,
                 duplicate_out: Callable[[Frame], bool] | None = None) -> None:
        self._inner = inner
        self._drop_in = drop_in or (lambda frame: False)
        self._drop_out = drop_out or (lambda frame: False)
        self._duplicate_in = duplicate_in or (lambda frame: False)
        self._duplicate_out = duplicate_out or (lambda frame: False)
        self._again: list[Frame] = []
        self.dropped: list[Frame] = []
        self.cuts = 0

    @property
    def kind(self) -> str:
        return str(getattr(self._inner, "kind", "websocket"))

    async def open(self) -> None:
        self._again.clear()
        await self._inner.open()

    async def send(self, frame: Frame) -> None:
        if self._drop_out(frame):
            self.dropped.append(frame)
            return
        await self._inner.send(frame)
        if self._duplicate_out(frame):
            await self._inner.send(frame)

    async def receive(self) -> Frame:
        while True:
            frame = self._again.pop() if self._again else await self._inner.receive()
            if self._drop_in(frame):
                self.dropped.append(frame)
                continue
            if self._duplicate_in(frame):
                self._again.append(frame)
            return frame

    async def cut(self) -> None:
        """The connection drops (the client sees it closed, as after a network cut)."""
        self.cuts += 1
        await self._inner.close()

    async def close(self) -> None:
        await self._inner.close()


def drop_first(predicate: Callable[[Frame], bool], count: int = 1) -> Callable[[Frame], bool]:
    """A drop rule: the first `count` frames matching `predicate` are lost, later ones pass."""
    left = [count]

    def rule(frame: Frame) -> bool:
        if left[0] > 0 and predicate(frame):
            left[0] -= 1
            return True
        return False

    return rule
