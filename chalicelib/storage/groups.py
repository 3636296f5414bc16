"""Groups: the group's head and roster, and the transactions that change its membership.

(Filled in below; `is_group_id` is what other modules import.)
"""
from __future__ import annotations

GROUP_PREFIX = "g_"


def is_group_id(conversation_id: str) -> bool:
    """A group's conversation id starts with `g_` (a 1:1 id with `d_`)."""
    return conversation_id.startswith(GROUP_PREFIX)
