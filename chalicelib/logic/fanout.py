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
identity that is not a member now. A push that fails is logged and skipped: the member catches
up by `sync` when it sees the gap (no per-member retransmission for groups, protocol.md §13.5).

An ephemeral frame (`typing`, protocol.md §14.2) goes the same way with no seq: it reaches
every member on the roster when its page runs (there is no joined_seq to compare), and a lost
one is simply lost.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chalicelib import observability
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.groups import GroupsStore
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.presence import PresenceTable

GROUP_FANOUT = "group_fanout"
PAGE = 100  # members per job: one roster Query page and one presence BatchGetItem (its limit)

Frame = dict[str, Any]


@dataclass(frozen=True)
class FanoutPage:
    """A `group_fanout` job's fields: which roster page gets which frame."""

    conversation_id: str
    seq: int | None  # None: an ephemeral frame (no joined_seq to compare)
    frame: Frame
    skip: str | None  # the sending connection (it has `sent`)
    after: str | None = None  # the roster page starts after this identity key

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> FanoutPage:
        seq = job.get("seq")
        return cls(str(job["conversation_id"]), None if seq is None else int(seq), dict(job["frame"]),
                   job.get("skip"), job.get("after"))


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
        """Enqueue the first page's job. Never raises: the message is stored whatever happens
        here, and a member that gets no push catches up by `sync` (on a gap, a reconnect)."""
        try:
            self._enqueue(FanoutPage(conversation_id, seq, frame, skip_connection))
        except Exception:  # members catch up by sync
            observability.failed("group_fanout_not_started", conversation_id=conversation_id, seq=seq)

    def start_ephemeral(self, conversation_id: str, frame: Frame, skip_connection: str | None) -> None:
        """Enqueue the fan-out of a frame that is no message (no seq: every current member
        online gets it, except `skip_connection`). Never raises: nothing depends on it."""
        try:
            self._enqueue(FanoutPage(conversation_id, None, frame, skip_connection))
        except Exception:  # an ephemeral frame is simply not shown
            observability.failed("group_fanout_not_started", conversation_id=conversation_id)

    def run(self, job: Mapping[str, Any]) -> None:
        """The `group_fanout` job: one roster page."""
        page = FanoutPage.from_job(job)
        observability.bind(conversation_id=page.conversation_id, seq=page.seq)
        members, after = self._groups.roster_page(page.conversation_id, page.after, self._page)
        if after is not None:
            self._enqueue(FanoutPage(page.conversation_id, page.seq, page.frame, page.skip, after))
        # a member added after this message never gets it (it starts at its own joined_seq)
        receivers = [m.member for m in members if page.seq is None or m.joined_seq <= page.seq]
        if not receivers:
            return
        now = self._clock()
        online = [p for p in self._presence.batch(receivers, consistent=True).values() if p.online(now)]
        # a failure in one member's pushes: that member catches up by sync
        pushes = sum(self._push_to(presence.identity, presence.connections, page) for presence in online)
        observability.group_pushes(pushes, len(online), len(receivers))

    def _push_to(self, identity: Identity, connections: tuple[ConnectionRecord, ...], page: FanoutPage) -> int:
        """Push the page's frame to the identity's connections but the sending one; how many
        got it. Failures are logged, never raised."""
        pushes = 0
        for connection in connections:
            if connection.connection_id == page.skip:
                continue  # the sending connection has `sent`
            try:
                pushes += self._router.push(connection, page.frame)
            except Exception:
                observability.failed("group_fanout_push_failed", receiver=identity.key,
                                     to_connection=connection.connection_id)
        return pushes

    def _enqueue(self, page: FanoutPage) -> None:
        self._jobs.enqueue(GROUP_FANOUT, **asdict(page))
