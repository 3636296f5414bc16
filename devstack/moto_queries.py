"""moto's base-table Query, reading only the partition it asks for.

moto 5's `Table.query` finds a base-table partition by walking `all_items()`, which sorts every
item of the table at every call. The local stack's connections table holds every connection,
mailbox and presence item, so each routing lookup (`pk=U#<identity>`) slowed with the number of
connections online: with 1,000 long-poll connections open (bench.held_waits) a send's Query took
64 ms instead of 1.3 ms. `install()` hands that one case (no index, a hash key given, a table
with a range key) the partition's own items; everything after (the sort by range key, the key
conditions, the filter, paging, projection) is moto's own code, unchanged. Queries of an index
still walk the table (moto keeps no index structure). `tests/test_moto_queries.py` holds the
two to the same answers. The deployed code never imports this.
"""
from __future__ import annotations

import inspect
from typing import Any

from moto.dynamodb.models.table import Table

ORIGINAL_QUERY = Table.__dict__["query"]
_SIGNATURE = inspect.signature(ORIGINAL_QUERY)


def install() -> None:
    """Idempotent, process-wide."""
    Table.query = _query  # type: ignore[method-assign]


def uninstall() -> None:
    """Plain moto again (the contract test compares the two)."""
    Table.query = ORIGINAL_QUERY  # type: ignore[method-assign]


def installed() -> bool:
    return Table.__dict__["query"] is _query


def _query(self: Table, *args: Any, **kwargs: Any) -> Any:
    bound = _SIGNATURE.bind(self, *args, **kwargs)
    hash_key = bound.arguments.get("hash_key")
    if bound.arguments.get("index_name") or hash_key is None or not self.range_key_attr:
        return ORIGINAL_QUERY(self, *args, **kwargs)
    partition = self.items.get(hash_key)  # .get: the table's defaultdict must not grow a key
    found = list(partition.values()) if partition else []
    # moto's query reads `self.all_items()` once, for the base table; hand it the partition
    self.all_items = lambda: found  # type: ignore[method-assign]
    try:
        return ORIGINAL_QUERY(self, *args, **kwargs)
    finally:
        del self.all_items
