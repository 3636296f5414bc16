"""Export of everything stored about one identity (issue 26 point 5, GDPR access and
portability; docs/operator.md "Export"): an operator's `POST /operator/export`, as JSON.

The first page (no `cursor`) holds the identity's own items: settings, linked identities (the
user a visitor became, the visitors a user was), memberships (1:1 with peer, cursors, block
marks; groups with role and joined seq), the groups it left (and is not in again), a ban,
presence (last seen), and the reports it filed; every page holds up to `MESSAGES_PER_PAGE` of
the messages it wrote (message frames as clients get them: a photo with a signed link valid
`media_url_seconds`), walked conversation by conversation (its memberships in id order, then the
groups it left: `ErasureStore.place_after`; in each, the conversation's partition by a Query
filtered on sender: `MessagesTable.written_by`, at most `MAX_QUERIES` a page), and `next`, the
cursor of the following page (null: complete). Nothing is a Scan; the reports it filed are found
by reading both status lists (a Query each per page of 100, rare items).
"""
from __future__ import annotations

from typing import Any

from chalicelib.errors import InvalidFieldError
from chalicelib.logic.media import Media
from chalicelib.logic.message_frames import message_frame
from chalicelib.principal import Identity
from chalicelib.storage.bans import BansTable
from chalicelib.storage.erasure import ErasureStore, conversation_of, is_place
from chalicelib.storage.members import Membership, MembersTable
from chalicelib.storage.messages import MessagesTable
from chalicelib.storage.presence import PresenceTable
from chalicelib.storage.reports import ReportsTable

Frame = dict[str, Any]
MESSAGES_PER_PAGE = 1000
READ = 100  # message items a Query reads
MAX_QUERIES = 100  # a page's Queries at most (an identity in thousands of conversations it never wrote in)
STATUSES = ("open", "closed")


class Export:
    def __init__(self, store: ErasureStore, members: MembersTable, messages: MessagesTable, reports: ReportsTable,
                 bans: BansTable, presence: PresenceTable, media: Media | None) -> None:
        self._store = store
        self._members = members
        self._messages = messages
        self._reports = reports
        self._bans = bans
        self._presence = presence
        self._media = media
        self.page_size = MESSAGES_PER_PAGE
        self.max_queries = MAX_QUERIES

    def export(self, identity: Identity, cursor: object = None) -> Frame:
        place, seq = _cursor(cursor)
        page: Frame = {"identity": identity.to_json()}
        if place is None:
            page.update(self._own(identity))
        messages, page["next"] = self._messages_page(identity, place, seq)
        page["messages"] = messages
        return page

    def _own(self, identity: Identity) -> Frame:
        memberships = self._members.conversations(identity)  # 1 MB a Query: ~4,000 memberships
        current = {m.conversation_id for m in memberships}
        ban = self._bans.get(identity)
        presence, _ = self._presence.read(identity)
        linked_user = self._members.linked_user(identity) if identity.kind == "visitor" else None
        return {
            "settings": {"read_receipts": self._members.settings(identity).read_receipts},
            "linked": {"became": linked_user.to_json() if linked_user else None,
                       "was": [v.to_json() for v in self._members.linked_visitors(identity)]},
            "memberships": [_membership_json(m) for m in memberships],
            "groups_left": [{"conversation_id": g.group_id, "left_seq": g.left_seq, "time": g.left_time_ms}
                            for g in self._store.groups_left(identity) if g.group_id not in current],
            "ban": {"by": ban.by.to_json(), "reason": ban.reason, "time": ban.time_ms} if ban else None,
            "presence": {"last_seen": presence.last_seen_ms} if presence else None,
            "reports_filed": self._reports_filed(identity),
        }

    def _reports_filed(self, identity: Identity) -> list[Frame]:
        filed: list[Frame] = []
        for status in STATUSES:
            before: str | None = None
            while True:
                entries, before = self._reports.entries(status, 100, before)
                filed += [{"report_id": e.report_id, "status": e.status, "time": e.created_ms,
                           "conversation_id": e.conversation_id, "seq": e.seq, "reason": e.reason}
                          for e in entries if e.reporter == identity]
                if before is None:
                    break
        return filed

    def _messages_page(self, identity: Identity, place: str | None, seq: int) -> tuple[list[Frame], str | None]:
        frames: list[Frame] = []
        if place is None:
            place = self._store.place_after(identity, None)
            if place is None:
                return frames, None
            seq = 0
        queries = 0
        while len(frames) < self.page_size and queries < self.max_queries:
            queries += 1
            found, next_seq = self._messages.written_by(conversation_of(place), identity, seq,
                                                        min(READ, self.page_size - len(frames)))
            frames += [message_frame(m, self._media) for m in found]
            if next_seq is not None:
                seq = next_seq
                continue
            place = self._store.place_after(identity, place)
            if place is None:
                return frames, None
            seq = 0
        return frames, f"{place}/{seq}"


def _cursor(cursor: object) -> tuple[str | None, int]:
    if cursor is None:
        return None, 0
    if isinstance(cursor, str) and 0 < len(cursor) <= 200 and cursor.isprintable():
        place, _, seq = cursor.rpartition("/")
        if is_place(place) and seq.isdigit() and len(seq) <= 12:
            return place, int(seq)
    raise InvalidFieldError("'cursor' must be a previous page's 'next'")


def _membership_json(m: Membership) -> Frame:
    shown: Frame = {"conversation_id": m.conversation_id, "acked_seq": m.acked_seq, "read_seq": m.read_seq}
    if m.group:
        shown.update(kind="group", role=m.role, joined_seq=m.joined_seq)
    else:
        shown.update(kind="direct", peer=m.peer.to_json() if m.peer else None, wrote=m.wrote,
                     blocked=m.blocked, last_seq=m.last_seq, last_time=m.last_time)
    return shown
