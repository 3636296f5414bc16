"""A lossy network under the long-poll transport: an httpx transport that loses whole requests or
whole answers (the server acted, the client never heard) of the long poll's waits, polls and
sends, as a test chooses. It runs the real HTTP underneath; nothing of the client is replaced.

    network = LossyHttp(lose)
    LongPollTransport(api, token, http=lambda: httpx.AsyncClient(transport=network.fresh()))

A lost wait answer is the case the protocol cares most about (§2b): SQS handed the rings out
and will not hand them out again; the client's poll after the failed wait must return them."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from devstack.wait_api import PREFIX as WAIT_PREFIX


def kind_of(request: httpx.Request) -> str:
    """wait, poll, send, open, close (or other)."""
    path = request.url.path
    if path.startswith(WAIT_PREFIX):
        return "wait"
    for kind in ("poll", "send", "open", "close"):
        if path.endswith(f"/lp/{kind}"):
            return kind
    return "other"


def rings_in(body: bytes) -> int:
    """How many rings a wait answer carried."""
    try:
        answer = json.loads(body)
        messages = answer["ReceiveMessageResponse"]["ReceiveMessageResult"]["messages"] or []
    except (ValueError, KeyError, TypeError):
        return 0
    return len(messages)


@dataclass
class Exchange:
    kind: str
    status: int | None  # None: the request or its answer was lost
    rings: int = 0  # a wait answer's rings (also when the answer was lost)


# (kind, the answer as the server gave it) -> lose it? `before` rules lose the request itself.
AnswerRule = Callable[[str, httpx.Response], bool]
RequestRule = Callable[[str], bool]


@dataclass
class LossyHttp(httpx.AsyncBaseTransport):
    lose_answer: AnswerRule = lambda kind, response: False  # noqa: E731
    lose_request: RequestRule = lambda kind: False  # noqa: E731
    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    log: list[Exchange] = field(default_factory=list)  # every exchange, in order
    lost: Counter[str] = field(default_factory=Counter)  # "<kind> request" / "<kind> answer"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        kind = kind_of(request)
        if self.lose_request(kind):
            self.lost[f"{kind} request"] += 1
            self.log.append(Exchange(kind, None))
            raise httpx.ConnectError(f"lost on the way: {kind}", request=request)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        rings = rings_in(body) if kind == "wait" and response.status_code == 200 else 0
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")]  # body decoded
        answer = httpx.Response(response.status_code, headers=headers, content=body, request=request)
        if self.lose_answer(kind, answer):
            self.lost[f"{kind} answer"] += 1
            self.log.append(Exchange(kind, None, rings))
            raise httpx.ReadError(f"the answer was lost: {kind}", request=request)
        self.log.append(Exchange(kind, response.status_code, rings))
        return answer

    def fresh(self) -> LossyHttp:
        """The same network (rules, log, counts) for a new HTTP client: each client closes its own pool."""
        return LossyHttp(self.lose_answer, self.lose_request, log=self.log, lost=self.lost)

    async def aclose(self) -> None:
        await self.inner.aclose()


def lose_first_wait_with_rings() -> AnswerRule:
    """Loses the first wait answer that carries rings (SQS has handed them out)."""
    done = [False]

    def rule(kind: str, response: httpx.Response) -> bool:
        if done[0] or kind != "wait" or response.status_code != 200 or not rings_in(response.content):
            return False
        done[0] = True
        return True

    return rule
