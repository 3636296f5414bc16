"""Presence: online while any connection lives, pushed to conversation peers, pulled in batches.

Push where consistency matters (the people you chat with get a `presence` frame when you come
or go), pull where it matters less (listing pages ask for up to 100 sellers at once).

- Online: some WebSocket or long-poll connection is live. A WebSocket connection stays live
  for `window` seconds (40 minutes) after its last `ping` (clients ping every 36 minutes, and
  between pings keep the line with `keepalive` frames that API Gateway takes itself, unanswered,
  so no Lambda runs), a long-poll one for its re-poll window. `$disconnect` may never
  come, so liveness is a deadline judged when read, never a counter.
- Serialised: every change is a conditional write on the identity's own presence item
  (storage/presence.py); a `settle` that loses a race reads again.
- No flapping: a disconnect is judged `grace` seconds later (an SQS job), so a page reload or a
  tab hand-over that reconnects within the grace never shows "offline". A lost disconnect is
  judged when the last heartbeat's deadline passes (each heartbeat that moves the deadline
  schedules that check). One chain of checks per identity, not one per heartbeat: a check
  made for a deadline that a later heartbeat has since moved ends there, since that
  heartbeat queued its own (without this, an identity online for days would run one more
  check every 15 minutes for each ping it ever sent).
- Told to every allowed peer: the newest page of conversations inline, the rest by a chain of
  SQS jobs, one page each, so no Lambda does unbounded work.
- Private for visitors: a visitor's presence goes only to peers of conversations where the
  visitor itself wrote, never merely because someone wrote to it (docs/presence.md).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.logic.privacy import may_reveal
from chalicelib.observability import module_logger
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.jobs_queue import MAX_DELAY_SECONDS, JobsQueue
from chalicelib.storage.members import Membership, MembersTable
from chalicelib.storage.presence import NotExtended, Presence, PresenceTable

log = module_logger(__name__)  # JSON, with the invocation's keys

PRESENCE_SETTLE = "presence_settle"
PRESENCE_PUSH = "presence_push"
INLINE_PAGE = 50  # memberships whose peers are told at once (the newest conversations)
JOB_PAGE = 100  # memberships per later page, each its own SQS job
MAX_BATCH = 100
ONLINE, OFFLINE = "online", "offline"

Frame = dict[str, Any]


class PresenceService:
    def __init__(
        self,
        table: PresenceTable,
        router: Router,
        members: MembersTable,
        jobs: JobsQueue,
        window_seconds: int,
        grace_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self._router = router
        self._members = members
        self._jobs = jobs
        self.window = window_seconds
        self._grace = grace_seconds
        self._clock = clock

    # -- changes ---------------------------------------------------------------------------
    def live(self, record: ConnectionRecord) -> None:
        """A connection opened or proved alive (connect, ping, poll): online until its deadline."""
        now = self._clock()
        # the check first: a deadline moved without its check queued would go unchecked (the
        # check for the deadline before ends when it sees it moved); a failure here moves nothing
        self._schedule(record.identity, max(1, record.live_until - int(now)) + 1, until=record.live_until)
        try:
            old = self._table.extend(record.identity, record.live_until, int(now * 1000))
        except NotExtended:
            return  # already online until later (another device): that deadline has its check; this one ends
        if old is None or not old.online(now):
            version = (old.version if old else 0) + 1
            if (old is None or old.announced != ONLINE) and self._table.announce(record.identity, ONLINE, version):
                self._tell_peers(record.identity, True, int(now * 1000))

    def forget_unopened(self, record: ConnectionRecord) -> None:
        """Undo a connection whose opening failed after it was registered: forget it and judge
        the identity now (`live` may already have moved its deadline). Best effort: the caller
        raises the original error; what is left here expires by itself."""
        try:
            self._router.unregister(record)
            self.settle({"identity": record.identity.key})
        except Exception:
            log.exception("could not undo a connection that failed to open")

    def heartbeat(self, record: ConnectionRecord) -> ConnectionRecord:
        fresh = self._router.heartbeat(record, self.window)
        self.live(fresh)
        return fresh

    def gone(self, identity: Identity) -> None:
        """A connection closed: judge the identity after the grace period."""
        self._schedule(identity, self._grace)

    def _schedule(self, identity: Identity, delay: int, until: int | None = None) -> None:
        """Queue a settle `delay` s from now (SQS takes at most 15 min: a check for a later
        deadline runs early and queues itself again). `until`: the deadline it is the check
        for; None (a disconnect's) judges whatever it finds."""
        fields: dict[str, Any] = {"identity": identity.key}
        if until is not None:
            fields["until"] = until
        self._jobs.enqueue(PRESENCE_SETTLE, delay_seconds=min(delay, MAX_DELAY_SECONDS), **fields)

    def settle(self, job: dict[str, Any]) -> None:
        """The SQS job: recompute from the live connections; tell peers if the state changed.
        Idempotent: run twice, the second run finds nothing to change or announce."""
        identity = Identity.from_key(job["identity"])
        for _ in range(5):
            now = self._clock()
            presence, connections = self._table.read(identity)
            if presence is None:
                return
            if "until" in job and presence.online_until > int(job["until"]):
                return  # moved by a later heartbeat, which queued the check for its deadline
            # routes (what a group fan-out pushes to) of connections that ended without a close
            routed = {c.connection_id for c in connections if c.expires_at > now}
            self._table.prune_routes(identity, [c.connection_id for c in presence.connections
                                                if c.connection_id not in routed])
            deadlines = [c.live_until for c in connections]
            live = [d for d in deadlines if d > now]
            until = max(live) if live else min(presence.online_until, int(now))
            version = presence.version
            if until != presence.online_until:
                if not self._table.settle(identity, until, presence.last_seen_ms or int(now * 1000), version):
                    continue  # someone changed it since we read: read again
                version += 1
            state = ONLINE if until > now else OFFLINE
            if presence.announced != state and self._table.announce(identity, state, version):
                self._tell_peers(identity, state == ONLINE, presence.last_seen_ms)
            # still online: the latest deadline needs its check. This one continues it when it
            # is that deadline's own (run early: SQS's 15 min), or when it wrote the deadline;
            # a deadline it found in place was put there with its check (a heartbeat's, or the
            # settle that wrote it), so a close's check queues no second chain
            if live and (until != presence.online_until or job.get("until") == until):
                self._schedule(identity, until - int(now) + 1, until=until)
            return

    def _tell_peers(self, identity: Identity, online: bool, last_seen_ms: int | None) -> None:
        self._tell_page(identity, online, last_seen_ms, None, INLINE_PAGE)

    def push_job(self, job: dict[str, Any]) -> None:
        """The SQS job: tell the next page of peers, unless the state changed since (then the
        newer announcement's own chain tells everyone). At least once: a repeated page only
        repeats the same frame to the same peers."""
        identity = Identity.from_key(job["identity"])
        presence, _ = self._table.read(identity)
        if presence is None or presence.announced != (ONLINE if job["online"] else OFFLINE):
            return
        time_ms, conversation_id = job["after"]
        self._tell_page(identity, bool(job["online"]), job["last_seen"], (int(time_ms), str(conversation_id)),
                        JOB_PAGE)

    def _tell_page(self, identity: Identity, online: bool, last_seen_ms: int | None,
                   after: tuple[int, str] | None, limit: int) -> None:
        """Tell the peers of one page of the identity's memberships (newest first), then queue
        the next page. Pushes first: a failure retries this page, never skips it."""
        frame = {"type": "presence", "identity": identity.to_json(), "online": online, "last_seen": last_seen_ms}
        memberships, more = self._members.page(identity, limit, after)
        peers = dict.fromkeys(m.peer for m in memberships if m.peer is not None and may_reveal(identity, m))
        for peer in peers:
            self._router.push_to(peer, frame)
        if more and memberships:
            last = memberships[-1]
            self._jobs.enqueue(PRESENCE_PUSH, identity=identity.key, online=online, last_seen=last_seen_ms,
                               after=[last.last_time, last.conversation_id])

    # -- pull ------------------------------------------------------------------------------
    def batch(self, identities: list[Identity], caller: Identity | None = None) -> list[Frame]:
        """Listing pages: users' status and last-seen time in one batched read.

        Privacy: a user's online status and last-seen time are public to any signed-in caller
        (a seller's "online" badge), asked for by id only (nothing lists ids, so nobody can
        enumerate users; an id that never connected looks like any offline user). A visitor's
        presence is told only to the people they chose to chat with: the pull reveals it to a
        caller in whose conversation the visitor itself wrote (one more batched read, only when
        visitors are asked), and to nobody else; writing to a visitor unlocks nothing.
        """
        asked = list(dict.fromkeys(identities))[:MAX_BATCH]
        shared = self._shared(caller, asked)
        users = [i for i in asked if i.kind == "user"]
        visible = set(users) | self._visitors_chatting_with(shared, [i for i in asked if i.kind == "visitor"])
        # a user who blocked the caller (protocol.md §15) answers as one that never connected
        blocking = {i for i, m in shared.items() if m.blocked_by_peer}
        found = self._table.batch([i for i in asked if i in visible and i not in blocking])
        now = self._clock()
        answers: list[Frame] = []
        for identity in asked:
            if identity not in visible:
                answers.append({"identity": identity.to_json(), "online": None, "last_seen": None})
                continue
            presence: Presence | None = found.get(identity)
            answers.append({
                "identity": identity.to_json(),
                "online": bool(presence and presence.online(now)),
                "last_seen": presence.last_seen_ms if presence else None,
            })
        return answers

    def _shared(self, caller: Identity | None, asked: list[Identity]) -> dict[Identity, Membership]:
        """The caller's 1:1 memberships with the asked identities that exist (writers and the
        block mark), in one BatchGetItem of at most 100 keys; none without a caller."""
        if caller is None or not asked:
            return {}
        pairs = {(caller, direct_conversation_id(caller, other)): other for other in asked if other != caller}
        return {pairs[pair]: m for pair, m in self._members.writers(list(pairs)).items()}

    @staticmethod
    def _visitors_chatting_with(shared: dict[Identity, Membership], visitors: list[Identity]) -> set[Identity]:
        return {visitor for visitor in visitors if visitor in shared and shared[visitor].peer_wrote}

