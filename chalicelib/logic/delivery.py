"""Queueing the job that assures a stored message's delivery (a 1:1 message's ack check, a
group's fan-out): tried twice, then refused with `internal_error`.

Twice, although each try is already the SDK's retries: the sender's retry after
`internal_error` may never come (a client may settle the send from its own copy in a pull,
protocol.md §9a), and without the job nothing would tell the receivers of the last message
of a burst.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import DeliveryNotStarted

TRIES = 2


def queue_or_refuse(enqueue: Callable[[], None], refusal: DeliveryNotStarted, event: str, **fields: Any) -> None:
    """Run `enqueue` up to TRIES times; when every try fails, log `event` (ERROR, with the
    exception and `fields`) and raise `refusal` (answered `internal_error`)."""
    for tries_left in range(TRIES - 1, -1, -1):
        try:
            enqueue()
            return
        except Exception as error:
            if not tries_left:
                observability.failed(event, **fields)
                raise refusal from error
