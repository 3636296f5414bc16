"""What the messaging services share: their collaborators, a message as every frame carries it,
the answer budget of a page, and group heads by id.

`MessagingParts` is the one set of collaborators the send path (messaging.py), the ack check
(ack_check.py), the pull (pull.py) and the conversation list (conversations.py) are built from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.logic.fanout import GroupFanout
from chalicelib.logic.limits import Limits
from chalicelib.logic.media import Media
from chalicelib.routing.router import Router
from chalicelib.storage.groups import GroupHead, GroupsStore
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import Message, MessagesTable

Frame = dict[str, Any]
# An answer is one WebSocket message (128 KB at most on API Gateway): pages stop at this budget.
ANSWER_BUDGET_BYTES = 96 * 1024
HEADS_PER_READ = 100  # BatchGetItem's most keys


@dataclass(frozen=True)
class MessagingParts:
    """The tables, router and optional services messaging works with (built once, wiring.py)."""

    messages: MessagesTable
    members: MembersTable
    router: Router
    jobs: JobsQueue  # the ack checks
    limits: Limits | None = None  # the send rate is counted inside the send's transaction
    groups: GroupsStore | None = None  # group heads: last seq, preview, title (read at list/sync time)
    fanout: GroupFanout | None = None  # group pushes, as jobs after `sent`
    media: Media | None = None  # photos: checked before the store, signed into every message frame


def message_frame(message: Message, media: Media | None) -> Frame:
    """A message as every frame carries it: a photo's `image` with a freshly signed URL."""
    frame = message.to_frame()
    if message.image is not None and media is not None:
        frame["image"] = media.image_frame(message.image)
    return frame


def group_heads(groups: GroupsStore | None, group_ids: list[str]) -> dict[str, GroupHead]:
    """Group heads by id, one BatchGetItem per 100 (none for no groups)."""
    if not group_ids or groups is None:
        return {}
    heads: dict[str, GroupHead] = {}
    for start in range(0, len(group_ids), HEADS_PER_READ):
        heads.update(groups.heads(group_ids[start:start + HEADS_PER_READ]))
    return heads


def frame_size(frame: Frame) -> int:
    return len(json.dumps(frame, ensure_ascii=False).encode("utf-8"))


def within_budget(frames: list[Frame], budget: int) -> list[Frame]:
    """The longest prefix of `frames` that fits in `budget` bytes (at least one frame)."""
    taken: list[Frame] = []
    for frame in frames:
        budget -= frame_size(frame)
        if taken and budget < 0:
            break
        taken.append(frame)
    return taken
