"""The long-poll transport: the same frames over REST, for networks that block WebSocket.

`open` creates a long-poll connection; a background loop keeps one poll held at all times
(re-issued the moment one returns) and feeds what it returns to `receive`; `send` POSTs a
client frame and feeds its answers to `receive` too, so the client cannot tell the two
transports apart. The cursor only moves after a poll's frames are queued, so a lost poll
response costs nothing: the next poll returns the same frames.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from webim_client.transport import Frame


class LongPollTransport:
    def __init__(self, api_url: str, token: str, wait: float = 20.0) -> None:
        self._api = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._wait = wait
        self._http = httpx.AsyncClient(timeout=wait + 15)
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None
        self.connection_id: str | None = None
        self.cursor = 0
        self.base = 1

    async def open(self) -> None:
        """Open a long-poll connection (again after `close`: the client reconnects this way)."""
        if self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=self._wait + 15)
        self._queue = asyncio.Queue()  # nothing of an old connection (its end marker) carries over
        response = await self._http.post(f"{self._api}/lp/open", headers=self._headers)
        if response.status_code != 201:
            raise ConnectionError(f"long poll refused: {response.status_code} {response.text}")
        opened = response.json()
        self.connection_id, self.base = opened["connection_id"], opened["base"]
        self.cursor = self.base - 1
        self._poller = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        try:
            while True:
                answer = await self._poll_once()
                for frame in answer["frames"]:
                    self._queue.put_nowait(frame)
                self.base, self.cursor = answer["base"], answer["cursor"]
        except (httpx.HTTPError, ConnectionError):
            pass
        finally:
            self._queue.put_nowait(None)  # the line is gone

    async def _poll_once(self) -> Any:
        body = {"connection_id": self.connection_id, "cursor": self.cursor, "base": self.base, "wait": self._wait}
        response = await self._http.post(f"{self._api}/lp/poll", headers=self._headers, json=body)
        if response.status_code != 200:
            raise ConnectionError(f"poll failed: {response.status_code} {response.text}")
        return response.json()

    async def send(self, frame: Frame) -> None:
        response = await self._http.post(f"{self._api}/lp/send", headers=self._headers,
                                         params={"connection_id": self.connection_id or ""},
                                         content=json.dumps(frame, ensure_ascii=False).encode())
        if response.status_code != 200:
            if response.status_code == 410 and self._poller is not None:
                self._poller.cancel()  # the connection is gone: end the line now, so the client reconnects
            raise ConnectionError(f"send failed: {response.status_code} {response.text}")
        for answer in response.json()["frames"]:
            self._queue.put_nowait(answer)

    async def receive(self) -> Frame:
        frame = await self._queue.get()
        if frame is None:
            raise ConnectionError("the long-poll connection is gone")
        return frame

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        with contextlib.suppress(Exception):
            await self._http.post(f"{self._api}/lp/close", headers=self._headers,
                                  json={"connection_id": self.connection_id})
        await self._http.aclose()
