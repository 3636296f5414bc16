"""The long-poll transport (protocol version 4, docs/protocol.md §2b): the same frames over HTTP,
for networks that block WebSocket.

`open` creates a long-poll connection; a background loop keeps one **wait** open at all times
(`POST wait_url` with the connection's `wait_token`: API Gateway holds it on the connection's
SQS queue, no function runs) and feeds the rings it returns through `Rings` (rings.py: order,
duplicates, gaps) to `receive`. A **poll** (answered at once) returns every frame still waiting:
the transport polls on a gap, a ring without a copy or an unreadable one, after any wait that did
not end with a 200 (a lost wait answer's rings are not handed out again: the poll returns its
frames), to release what it processed (when no `send` carried the cursor within `release_delay`),
and at least every `heartbeat` seconds (the connection's deadline moves only with polls). `send`
POSTs a client frame (carrying the cursor when a release is owed) and feeds its answers to
`receive` too, so the client cannot tell the two transports apart. A 410 (the connection is gone)
on a poll or a send ends the line: the client reconnects and syncs.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from webim_client.rings import Rings
from webim_client.transport import Frame

FATAL = (400, 401, 403, 404, 410)  # a poll refused for good: the line is gone (the client reconnects)
REQUEST_TIMEOUT = 15.0  # open, poll, send, close (each answers at once)


class _Line:
    """One connection's HTTP client and every request made on it. Each `open` makes its own;
    `close` closes it exactly once, after every request on it has ended: a request that finishes
    on a closed client's pool (or is still connecting when the pool closes) keeps its socket for
    good, and an old line's close must never close a newer line's client."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.connection_id: str | None = None
        self._requests: set[asyncio.Task[httpx.Response]] = set()
        self._closed: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closed is not None

    async def post(self, url: str, **options: Any) -> httpx.Response:
        """A request on this line (ConnectionError once the line is closing). Cancelling the
        caller cancels the request; `close` waits until it has unwound."""
        if self._closed is not None:
            raise ConnectionError("the long-poll line is closed")
        task = asyncio.ensure_future(self.http.post(url, **options))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return await task

    async def close(self, url: str, headers: dict[str, str]) -> None:
        """Once, whoever asks (a cut and the client's reconnect both do): the requests in flight
        end (opens and sends are let finish, up to REQUEST_TIMEOUT), `lp/close`, then the client
        closes. Shielded: a caller cancelled meanwhile does not leave the client open."""
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._close(url, headers))
        await asyncio.shield(self._closed)

    async def _close(self, url: str, headers: dict[str, str]) -> None:
        try:
            if self._requests:
                await asyncio.wait(list(self._requests), timeout=REQUEST_TIMEOUT)
            if self.connection_id is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await self.http.post(url, headers=headers, json={"connection_id": self.connection_id},
                                         timeout=REQUEST_TIMEOUT)
        finally:  # also when cancelled (a loop shutting down): nothing left running on the pool
            for task in self._requests:
                task.cancel()
            if self._requests:
                await asyncio.wait(list(self._requests))
            await self.http.aclose()


class LongPollTransport:
    """`wait`: the longest API Gateway holds a wait (20 s); a wait not answered 15 s after that is
    given up (and polled for). `http`: makes the HTTP client (a test's lossy one); `retries`:
    polls failed in a row (network, 5xx, 429) before the line counts as lost."""

    kind = "longpoll"  # the client sends no `keepalive` frames here (protocol.md §6.1)

    def __init__(self, api_url: str, token: str, wait: float = 20.0, *,
                 http: Callable[[], httpx.AsyncClient] = httpx.AsyncClient, release_delay: float = 1.0,
                 retries: int = 3, backoff: float = 0.5) -> None:
        self._api = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._wait = wait
        self._make_http = http
        self._line: _Line | None = None
        self._release_delay = release_delay
        self._retries = retries
        self._backoff = backoff
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll_lock = asyncio.Lock()
        self._rings = Rings(1)
        self._releasing = False
        self._ended = True
        self._wait_url: str | None = None
        self._wait_token = ""
        self._heartbeat = 240.0
        self._last_poll = 0.0
        self.connection_id: str | None = None
        self.base = 1
        self.polls = 0  # answered polls, and why the transport asked for them (tests, benches)
        self.waits = 0  # waits answered 200

    @property
    def cursor(self) -> int:
        """The number of the last frame processed."""
        return self._rings.processed

    async def open(self) -> None:
        """Open a long-poll connection (again after `close`: the client reconnects this way), on
        a new line (HTTP client) of its own."""
        if self._line is not None:
            await self.close()  # the old line is closed first (at once if it already was)
        line = self._line = _Line(self._make_http())
        self._queue = asyncio.Queue()  # nothing of an old connection (its end marker) carries over
        try:
            response = await line.post(f"{self._api}/lp/open", headers=self._headers, timeout=REQUEST_TIMEOUT)
        except httpx.HTTPError as error:
            raise ConnectionError(f"long poll not opened: {error!r}") from error
        if response.status_code != 201:
            raise ConnectionError(f"long poll refused: {response.status_code} {response.text}")
        opened = response.json()
        line.connection_id = opened["connection_id"]  # its close says lp/close, even a close racing this open
        if line.closing:
            raise ConnectionError("long poll closed while it opened")
        self.connection_id, self.base = opened["connection_id"], int(opened["base"])
        self._rings = Rings(self.base)
        self._wait_url, self._wait_token = opened.get("wait_url"), str(opened.get("wait_token") or "")
        self._heartbeat = float(opened.get("heartbeat") or 240)
        self._last_poll = asyncio.get_running_loop().time()
        self._releasing, self._ended = False, False
        self._start(self._wait_forever())
        self._start(self._beat())

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # a poll that kept failing or was refused, an answer not understood, a
            self._end()  # client closed under it (a close racing an open): the line is gone, say so

    async def _wait_forever(self) -> None:
        failed = 0
        while True:
            if self._wait_url is None:  # a server without a wait API: polls alone carry the frames
                await asyncio.sleep(self._release_delay)
                await self._poll()
                continue
            if await self._wait_once():
                failed = 0
                continue
            # no 200, or the answer asked for it: the poll returns whatever the wait did not give
            await self._poll()
            failed += 1
            if failed > 1:  # the wait keeps failing while polls work: not in a hot loop
                await asyncio.sleep(min(self._backoff * failed, 5.0))

    async def _wait_once(self) -> bool:
        """One wait; True when it answered 200 and its rings need no poll."""
        assert self._wait_url is not None
        try:
            response = await self._post(self._wait_url, headers={"Authorization": f"Bearer {self._wait_token}"},
                                             timeout=self._wait + 15)
        except httpx.HTTPError:
            return False  # lost, timed out, reset: its rings (if any) are invisible now
        if response.status_code != 200:
            return False  # 401/403 (token), 5xx/400 (the queue): the poll says what is left
        self.waits += 1
        try:
            answer = response.json()
        except ValueError:
            answer = None  # not JSON: poll
        taken = self._rings.waited(answer)
        self._deliver(taken.frames)
        return not taken.poll

    async def _poll(self) -> None:
        """One poll, answered at once: releases up to the cursor, moves the deadline, returns
        every frame still waiting and a fresh wait token. Retried on a network failure, a 5xx
        or a 429; refused (410 gone, 401, 403) or failing `retries` times: ConnectionError."""
        async with self._poll_lock:
            for attempt in range(1, self._retries + 1):
                cursor = self._rings.processed
                body = {"connection_id": self.connection_id, "cursor": cursor, "base": self.base}
                try:
                    response = await self._post(f"{self._api}/lp/poll", headers=self._headers, json=body,
                                                timeout=REQUEST_TIMEOUT)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 200:
                    self._polled(cursor, response.json())
                    return
                if response is not None and response.status_code in FATAL:
                    raise ConnectionError(f"poll refused: {response.status_code} {response.text}")
                if attempt < self._retries:
                    await asyncio.sleep(self._backoff * attempt)
            raise ConnectionError("polls keep failing: the line is lost")

    def _polled(self, cursor: int, answer: Frame) -> None:
        self.polls += 1
        self._last_poll = asyncio.get_running_loop().time()
        self._rings.released(cursor)
        self.base = int(answer["base"])
        self._wait_token = str(answer.get("wait_token") or self._wait_token)  # the newest one
        self._deliver(self._rings.polled(self.base, answer["frames"]).frames)

    def _deliver(self, frames: list[Frame]) -> None:
        if self._ended:
            return
        for frame in frames:
            self._queue.put_nowait(frame)
        if self._rings.owes and not self._releasing:
            self._releasing = True  # one release for what comes meanwhile too (coalesced)
            self._start(self._release_soon())

    async def _release_soon(self) -> None:
        """The release owed: a send that carries the cursor within `release_delay` does it
        on its way; otherwise a poll."""
        try:
            await asyncio.sleep(self._release_delay)
        finally:
            self._releasing = False
        if self._rings.owes:
            await self._poll()

    async def _beat(self) -> None:
        """A poll at least every `heartbeat` seconds: the waits do not move the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            due = self._last_poll + self._heartbeat
            if loop.time() >= due:
                await self._poll()
            else:
                await asyncio.sleep(due - loop.time())

    async def send(self, frame: Frame) -> None:
        line, rings = self._line, self._rings
        params: dict[str, Any] = {"connection_id": self.connection_id or ""}
        cursor = rings.processed if rings.owes else None
        if cursor is not None:  # the release owed travels with the frame
            params.update(cursor=cursor, base=self.base)
        response = await self._post(f"{self._api}/lp/send", headers=self._headers, params=params,
                                    content=json.dumps(frame, ensure_ascii=False).encode(), timeout=REQUEST_TIMEOUT)
        if line is not self._line:
            return  # answered on a line closed meanwhile: its answers belong to that connection
        if response.status_code != 200:
            if response.status_code == 410:
                self._end()  # the connection is gone: end the line now, so the client reconnects
            raise ConnectionError(f"send failed: {response.status_code} {response.text}")
        if cursor is not None:
            rings.released(cursor)
        if not self._ended:
            for answer in response.json()["frames"]:
                self._queue.put_nowait(answer)

    async def receive(self) -> Frame:
        frame = await self._queue.get()
        if frame is None:
            raise ConnectionError("the long-poll connection is gone")
        return frame

    def _end(self) -> None:
        """The line is gone: `receive` raises once what came before is read; the loops stop."""
        if self._ended:
            return
        self._ended = True
        self._queue.put_nowait(None)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def _post(self, url: str, **options: Any) -> httpx.Response:
        """A request on the current line; ConnectionError when there is none or it is closing."""
        if self._line is None:
            raise ConnectionError("the long-poll connection is not open")
        return await self._line.post(url, **options)

    async def close(self) -> None:
        """End the line: `receive` raises, the loops stop, and the line's HTTP client is closed
        once its requests have ended (every caller waits for that)."""
        self._end()
        if self._line is not None:
            await self._line.close(f"{self._api}/lp/close", self._headers)
