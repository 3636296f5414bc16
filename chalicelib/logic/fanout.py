"""Group fan-out: a stored group message pushed to every open connection of its online members.

The sender's path never waits for it and never grows with the group: `send` stores the message
(one transaction, nothing per member) and enqueues ONE job; the jobs push, a page of the roster
each, as SQS jobs of kind `group_fanout`:

    roster page (one consistent Query, 100 members, stable order)
      -> keep members who had joined by the message's seq (joined_seq <= seq)
      -> their presence items (one BatchGetItem): who is online, and each online member's
         connections (the presence item carries their routes, storage/connections.py); offline
         members cost nothing
      -> push to each connection, except the sending one
      -> the next page, as its own job (enqueued before this page pushes: pages run side by side)

Calls for one message to M members with K open connections in all (the sending one skipped):
ceil(M/100) x (Query + BatchGetItem) + (ceil(M/100) - 1) x SendMessage + (K - 1) x
PostToConnection: nothing per member. A WebSocket route left by a connection that ended
without a close is pushed to once: 410, and the router forgets it (its route goes with it); a
long poll that stopped polling still has a mailbox that takes frames, so its route draws
pushes until presence's settle prunes it (storage/connections.py).

Idempotent and safe to retry: a job re-run pushes the same frame again (clients drop it by
(conversation, seq), protocol.md §9c) and reads the roster afresh, so it never pushes to an
identity that is not a member now. A message's push that fails (an error past the SDK's
retries, or a 410 from a connection still in its handshake) is tried again to that connection
only, by a retry job after RETRY_DELAYS (2, 10, 30 s; one presence BatchGetItem, no roster
read; a connection forgotten meanwhile is skipped): the last message of a burst has no later
one to reveal the gap, and without it the member would wait for its tail check (§13.8). After
the last retry the member catches up by a gap, a reconnect or the tail check. A fan-out that
cannot start at all fails the sender's frame (`internal_error`), whose retry starts it.

An ephemeral frame (`typing`, protocol.md §14.2) goes the same way with no seq: it reaches
every member on the roster when its page runs (there is no joined_seq to compare), and a lost
one is simply lost.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from chalicelib import observability
from chalicelib.errors import DeliveryNotStarted
from chalicelib.logic.delivery import queue_or_refuse
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.groups import GroupsStore
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.presence import PresenceTable

GROUP_FANOUT = "group_fanout"
PAGE = 100  # members per job: one roster Query page and one presence BatchGetItem (its limit)
# a message's pushes that failed (an error after the SDK's retries, a 410 from a connection
# still in its handshake) are tried again after these seconds, only those connections
RETRY_DELAYS = (2, 10, 30)

Frame = dict[str, Any]


class FanoutNotStarted(DeliveryNotStarted):
    """A stored group message or event whose fan-out job could not be enqueued."""


@dataclass(frozen=True)
class FanoutPage:
    """A `group_fanout` job's fields: which roster page gets which frame."""

    conversation_id: str
    seq: int | None  # None: an ephemeral frame (no joined_seq to compare)
    frame: Frame
    skip: str | None  # the sending connection (it has `sent`)
    after: str | None = None  # the roster page starts after this identity key
    # a retry (no roster read): [identity key, connection id] of the pushes that failed, and
    # which retry this is (1..len(RETRY_DELAYS))
    retry: list[list[str]] | None = None
    attempt: int = 0

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> FanoutPage:
        seq = job.get("seq")
        retry = job.get("retry")
        return cls(str(job["conversation_id"]), None if seq is None else int(seq), dict(job["frame"]),
                   job.get("skip"), job.get("after"),
                   None if retry is None else [[str(k), str(c)] for k, c in retry], int(job.get("attempt", 0)))


class GroupFanout:
    def __init__(self, groups: GroupsStore, presence: PresenceTable, router: Router, jobs: JobsQueue,
                 clock: Callable[[], float] = time.time, page: int = PAGE) -> None:
        self._groups = groups
        self._presence = presence
        self._router = router
        self._jobs = jobs
        self._clock = clock
        self._page = min(page, PAGE)

    def start(self, conversation_id: str, seq: int, frame: Frame, skip_connection: str | None) -> None:
        """Enqueue the first page's job. Raises FanoutNotStarted when it could not: the message
        is stored, but no member would hear of it until something revealed the gap (the last of
        a burst: the tail check, minutes later). Tried twice (logic/delivery.py), then the
        sender's frame is answered `internal_error` and its retry (the same id, protocol.md §9a)
        starts the fan-out again."""
        queue_or_refuse(lambda: self._enqueue(FanoutPage(conversation_id, seq, frame, skip_connection)),
                        FanoutNotStarted("stored, but its delivery did not start: send the same frame again"),
                        "group_fanout_not_started", conversation_id=conversation_id, seq=seq)

    def start_ephemeral(self, conversation_id: str, frame: Frame, skip_connection: str | None) -> None:
        """Enqueue the fan-out of a frame that is no message (no seq: every current member
        online gets it, except `skip_connection`). Never raises: nothing depends on it."""
        try:
            self._enqueue(FanoutPage(conversation_id, None, frame, skip_connection))
        except Exception:  # an ephemeral frame is simply not shown
            observability.failed("group_fanout_not_started", conversation_id=conversation_id)

    def run(self, job: Mapping[str, Any]) -> None:
        """The `group_fanout` job: one roster page, or a retry of the pushes that failed."""
        page = FanoutPage.from_job(job)
        observability.bind(conversation_id=page.conversation_id, seq=page.seq)
        if page.retry is not None:
            self._run_retry(page)
            return
        members, after = self._groups.roster_page(page.conversation_id, page.after, self._page)
        if after is not None:
            self._enqueue(FanoutPage(page.conversation_id, page.seq, page.frame, page.skip, after))
        # a member added after this message never gets it (it starts at its own joined_seq)
        receivers = [m.member for m in members if page.seq is None or m.joined_seq <= page.seq]
        if receivers:
            self._push_page(page, receivers, None)

    def _run_retry(self, page: FanoutPage) -> None:
        """Push again to the connections whose push failed, those still routed (a connection
        forgotten since, after a 410, is not): no roster read, one presence BatchGetItem."""
        wanted: dict[str, set[str]] = {}
        for key, connection_id in page.retry or []:
            wanted.setdefault(key, set()).add(connection_id)
        self._push_page(page, [Identity.from_key(key) for key in wanted], wanted)

    def _push_page(self, page: FanoutPage, receivers: list[Identity], only: dict[str, set[str]] | None) -> None:
        now = self._clock()
        online = [p for p in self._presence.batch(receivers, consistent=True).values() if p.online(now)]
        failed: list[list[str]] = []
        pushes = 0
        for presence in online:
            connections = [c for c in presence.connections
                           if only is None or c.connection_id in only.get(presence.identity.key, set())]
            pushes += self._push_to(presence.identity, connections, page, failed)
        observability.group_pushes(pushes, len(online), len(receivers))
        if failed and page.seq is not None and page.attempt < len(RETRY_DELAYS):
            # a message (not a typing frame): its missed pushes again, later (the last of a
            # burst has no later message to reveal the gap)
            retry = replace(page, after=None, retry=failed, attempt=page.attempt + 1)
            try:
                self._enqueue(retry, delay_seconds=RETRY_DELAYS[page.attempt])
            except Exception:  # those members catch up by a gap, a reconnect or the tail check
                observability.failed("group_fanout_retry_not_queued", receivers=len(failed))

    def _push_to(self, identity: Identity, connections: list[ConnectionRecord], page: FanoutPage,
                 failed: list[list[str]]) -> int:
        """Push the page's frame to the identity's connections but the sending one; how many
        got it. Failures (an error, or a 410) are added to `failed`, never raised: the retry
        pushes again to those still routed (one in its handshake), not to one the router forgot."""
        pushes = 0
        for connection in connections:
            if connection.connection_id == page.skip:
                continue  # the sending connection has `sent`
            try:
                delivered = self._router.push(connection, page.frame)
            except Exception:
                observability.failed("group_fanout_push_failed", receiver=identity.key,
                                     to_connection=connection.connection_id)
                delivered = False
            pushes += delivered
            if not delivered:
                failed.append([identity.key, connection.connection_id])
        return pushes

    def _enqueue(self, page: FanoutPage, delay_seconds: int = 0) -> None:
        fields = asdict(page)
        if page.retry is None:  # a page job's fields as they always were
            del fields["retry"], fields["attempt"]
        self._jobs.enqueue(GROUP_FANOUT, delay_seconds=delay_seconds, **fields)
