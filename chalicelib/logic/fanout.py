"""Group fan-out: a stored group message pushed to every open connection of its online members.

The sender's path never waits for it and never grows with the group: `send` stores the message
(one transaction, nothing per member) and enqueues ONE job; the jobs push, a page of the roster
each, as SQS jobs of kind `group_fanout`:

    roster page (one consistent Query, 100 members, stable order)
      -> keep members who had joined by the message's seq (joined_seq <= seq)
      -> their presence items (one BatchGetItem): who is online; offline members cost nothing
      -> each online member's connections (one Query each) -> push, except the sending connection
      -> the next page, as its own job (enqueued before this page pushes: pages run side by side)

Calls for one message to M members, O of them online with K open connections in all:
ceil(M/100) x (Query + BatchGetItem + SendMessage) + O Queries + K PostToConnection.

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
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.routing.router import Router
from chalicelib.storage.groups import GroupsStore
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.presence import PresenceTable

GROUP_FANOUT = "group_fanout"
PAGE = 100  # members per job: one roster Query page and one presence BatchGetItem (its limit)

Frame = dict[str, Any]


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
            self._enqueue(conversation_id, seq, frame, skip_connection, None)
        except Exception:  # members catch up by sync
            observability.failed("group_fanout_not_started", conversation_id=conversation_id, seq=seq)

    def start_ephemeral(self, conversation_id: str, frame: Frame, skip_connection: str | None) -> None:
        """Enqueue the fan-out of a frame that is no message (no seq: every current member
        online gets it, except `skip_connection`). Never raises: nothing depends on it."""
        try:
            self._enqueue(conversation_id, None, frame, skip_connection, None)
        except Exception:  # an ephemeral frame is simply not shown
            observability.failed("group_fanout_not_started", conversation_id=conversation_id)

    def run(self, job: dict[str, Any]) -> None:
        """The `group_fanout` job: one roster page."""
        conversation_id = str(job["conversation_id"])
        seq = None if job.get("seq") is None else int(job["seq"])  # None: an ephemeral frame
        observability.bind(conversation_id=conversation_id, seq=seq)
        frame, skip = job["frame"], job.get("skip")
        members, after = self._groups.roster_page(conversation_id, job.get("after"), self._page)
        if after is not None:
            self._enqueue(conversation_id, seq, frame, skip, after)
        # a member added after this message never gets it (it starts at its own joined_seq)
        receivers = [m.member for m in members if seq is None or m.joined_seq <= seq]
        if not receivers:
            return
        now = self._clock()
        online = [i for i, p in self._presence.batch(receivers).items() if p.online(now)]
        pushes = 0
        for identity in online:  # a failure below: that member catches up by sync
            try:
                connections = self._router.connections_of(identity)
            except Exception:
                observability.failed("group_fanout_connections_failed", receiver=identity.key)
                continue
            for connection in connections:
                if connection.connection_id == skip:
                    continue  # the sending connection has `sent`
                try:
                    pushes += self._router.push(connection, frame)
                except Exception:
                    observability.failed("group_fanout_push_failed", receiver=identity.key,
                                         to_connection=connection.connection_id)
        observability.group_pushes(pushes, len(online), len(receivers))

    def _enqueue(self, conversation_id: str, seq: int | None, frame: Frame, skip: str | None,
                 after: str | None) -> None:
        self._jobs.enqueue(GROUP_FANOUT, conversation_id=conversation_id, seq=seq, frame=frame, skip=skip,
                           after=after)
