"""moto, kept flat for a long-running local stack: transactions that roll back item by item,
and no registry of every model object ever made.

moto 5's `DynamoDBBackend.transact_write_items` deep-copies every table a transaction touches
so that it can roll back, and `BaseModel.__new__` appends every model object (each copied item
included) to a class-level list for moto server's dashboard. Together each send costs time and
memory in proportion to the messages already stored, and none of it is ever freed.

`install()` replaces both, in this process only (the deployed code never imports this). The
replacement transaction is moto's own loop, step for step (same validation, same conditions
against the state before the transaction, same cancellation reasons), except that before an
entry touches an item it saves that one item (a deep copy, or "absent"), and a rollback puts
back only those items. Two deliberate differences, both towards DynamoDB: an entry holding more
than one operation also rolls back the entries before it (moto leaves them written), and a table
named by its ARN is rolled back too (moto backs up tables by name only).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from moto.core.common_models import BaseModel
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

ORIGINAL_TRANSACT_WRITE_ITEMS = DynamoDBBackend.__dict__["transact_write_items"]
ORIGINAL_MODEL_NEW = BaseModel.__dict__["__new__"]  # a staticmethod, as Python stores __new__
_ABSENT = object()


def install() -> None:
    """Idempotent: flat transactions and untracked model objects from now on, process-wide."""
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    BaseModel.__new__ = staticmethod(_untracked_new)  # type: ignore[method-assign]


def uninstall() -> None:
    """Plain moto again (the contract test compares the two)."""
    DynamoDBBackend.transact_write_items = ORIGINAL_TRANSACT_WRITE_ITEMS  # type: ignore[method-assign]
    BaseModel.__new__ = ORIGINAL_MODEL_NEW  # type: ignore[method-assign]


def installed() -> bool:
    return DynamoDBBackend.__dict__["transact_write_items"] is _transact_write_items


def _untracked_new(cls: type[BaseModel], *args: Any, **kwargs: Any) -> Any:
    # BaseModel.__new__ minus `cls.instances_tracked.append(instance)`: nothing here serves
    # moto server's dashboard, and that list keeps every copy alive forever.
    return super(BaseModel, cls).__new__(cls)


@dataclass
class _Journal:
    """What a transaction changed, enough to put it back: one entry per item, in touch order."""

    # (table, hash, range, bucket existed, old item or _ABSENT, container order before a delete)
    entries: list[tuple[Table, DynamoType, DynamoType | None, bool, Any, list[Any] | None]] = field(
        default_factory=list)
    seen: set[tuple[int, DynamoType, DynamoType | None]] = field(default_factory=set)
    whole_tables: dict[str, Table] = field(default_factory=dict)  # fallback: moto's own backup

    def save(self, table: Table, hash_value: DynamoType, range_value: DynamoType | None, *, delete: bool) -> None:
        """Before the first touch of an item: a deep copy of it, or absent; whether its range
        bucket existed (moto's read of a missing range key creates an empty one); and, before a
        delete, the order of its container (a re-inserted key would otherwise go last)."""
        if table.range_key_attr is not None and range_value is None:
            return  # moto's read rejects such a key before anything is written
        key = (id(table), hash_value, range_value)
        if key in self.seen:
            return
        self.seen.add(key)
        bucket_existed = hash_value in table.items
        if range_value is None:
            container: dict[Any, Any] | None = table.items
        else:
            container = table.items[hash_value] if bucket_existed else None
        lookup = hash_value if range_value is None else range_value
        old = _ABSENT if container is None else container.get(lookup, _ABSENT)
        order = None
        if old is not _ABSENT:
            old = copy.deepcopy(old)  # one item; an update changes it in place
            if delete and container is not None:
                order = list(container)  # references only, and only before a delete
        self.entries.append((table, hash_value, range_value, bucket_existed, old, order))

    def rollback(self, backend: DynamoDBBackend) -> None:
        for table, hash_value, range_value, bucket_existed, old, order in reversed(self.entries):
            if range_value is None:
                _restore(table.items, hash_value, old, order)
            else:
                if old is not _ABSENT or hash_value in table.items:
                    _restore(table.items[hash_value], range_value, old, order)
                if not bucket_existed and hash_value in table.items and not table.items[hash_value]:
                    del table.items[hash_value]
        for name, table in self.whole_tables.items():
            backend.tables[name] = table


def _restore(container: dict[Any, Any], key: Any, old: Any, order: list[Any] | None) -> None:
    if old is _ABSENT:
        container.pop(key, None)
        return
    reinserted = key not in container
    container[key] = old
    if reinserted and order is not None:  # back in its old place, as moto's table copy has it
        position = {k: i for i, k in enumerate(order)}
        entries = sorted(container.items(), key=lambda kv: position.get(kv[0], len(order)))
        container.clear()
        container.update(entries)


def _location(backend: DynamoDBBackend, op_type: str, op: dict[str, Any], table: Table,
              key: dict[str, Any]) -> tuple[DynamoType, DynamoType | None]:
    """The item an entry reads and writes, derived exactly as moto's write path derives it."""
    if op_type == "Put":
        attrs = op["Item"]
        range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr is not None else None
        return DynamoType(attrs[table.hash_key_attr]), range_value
    if op_type == "Update":  # DynamoDBBackend.update_item's own key handling
        if table.hash_key_attr in key and table.range_key_attr in key:
            return DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr])
        if table.hash_key_attr in key:
            return DynamoType(key[table.hash_key_attr]), None
        return DynamoType(key), None
    return backend.get_keys_value(table, key)


_OPERATIONS = {"ConditionCheck", "Put", "Delete", "Update"}
_Reason = tuple[str, str, dict[str, Any]] | tuple[None, None, None]  # (Code, Message, Item)


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    _TransactWrite(self).run(transact_items)


class _TransactWrite:
    """One TransactWriteItems as moto 5.2.5's DynamoDBBackend.transact_write_items runs it, step
    for step (the same checks, reads, writes and error entries, in the same order); only the
    backup differs: a journal of the items it touches instead of a copy of every table."""

    def __init__(self, backend: DynamoDBBackend) -> None:
        self.backend = backend
        self.journal = _Journal()
        self.target_items: set[tuple[str, str]] = set()
        self.original_item: dict[str, Any] | None = None  # the entry's item when its condition failed

    def run(self, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        errors: list[_Reason] = []
        for item in transact_items:
            # Check transact writes are not performing multiple operations on the same item
            if len(list(item.keys())) > 1:
                self.journal.rollback(self.backend)  # DynamoDB rejects the request whole; moto keeps earlier writes
                raise TransactWriteSingleOpException
            errors.append(self.entry(item))
        if any(code is not None for code, _, _ in errors):
            # Rollback to the original state, and reraise the errors
            self.journal.rollback(self.backend)
            raise TransactionCanceledException(errors)

    def entry(self, item: dict[str, Any]) -> _Reason:
        self.original_item = None
        try:
            self.write(item)
        except (MultipleTransactionsException, MockValidationException):
            # Rollback to the original state, and reraise the error
            self.journal.rollback(self.backend)
            raise
        except ConditionalCheckFailed as e:
            return ("ConditionalCheckFailed", str(e.message), self.original_item)  # type: ignore[return-value]
        except Exception as e:  # noqa: BLE001 - moto reports any other error as this entry's reason
            return (type(e).__name__, str(e), self.original_item)  # type: ignore[return-value]
        return (None, None, None)

    def write(self, item: dict[str, Any]) -> None:
        op_type, op = next(iter(item.items()))
        if op_type not in _OPERATIONS:
            raise ValueError("Unsupported transaction operation")
        table_name = op["TableName"]
        key = self.key(op_type, op, table_name)
        self.check_unicity(table_name, key)
        self.save(op_type, op, table_name, key)
        self.check_condition(op, table_name, key)
        self.apply(op_type, op, table_name, key)

    def key(self, op_type: str, op: dict[str, Any], table_name: str) -> dict[str, Any]:
        if op_type != "Put":
            return op["Key"]  # type: ignore[no-any-return]
        attrs = op["Item"]
        table = self.backend.get_table(table_name)
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key

    def check_unicity(self, table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in self.target_items:
            raise MultipleTransactionsException()
        self.target_items.add(item)

    def save(self, op_type: str, op: dict[str, Any], table_name: str, key: dict[str, Any]) -> None:
        backend = self.backend
        try:
            table = backend.get_table(table_name)
            hash_value, range_value = _location(backend, op_type, op, table, key)
        except Exception:
            # moto's own read below fails the same way before anything is written; should a
            # write still follow, the whole-table backup keeps the rollback exact
            if table_name in backend.tables and table_name not in self.journal.whole_tables:
                self.journal.whole_tables[table_name] = copy.deepcopy(backend.tables[table_name])
            return
        self.journal.save(table, hash_value, range_value, delete=op_type == "Delete")

    def check_condition(self, op: dict[str, Any], table_name: str, key: dict[str, Any]) -> None:
        current = self.backend.get_item(table_name, key)
        condition_expression = op.get("ConditionExpression")
        if condition_expression is None:
            return
        condition_op = get_filter_expression(
            condition_expression, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"))
        if not condition_op.expr(current):
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                self.original_item = current.to_json()["Attributes"]
            raise ConditionalCheckFailed(item=self.original_item)

    def apply(self, op_type: str, op: dict[str, Any], table_name: str, key: dict[str, Any]) -> None:
        expressions: dict[str, Any] = {"condition_expression": op.get("ConditionExpression"),
                                       "expression_attribute_names": op.get("ExpressionAttributeNames"),
                                       "expression_attribute_values": op.get("ExpressionAttributeValues")}
        if op_type == "Put":
            self.backend.put_item(table_name, op["Item"], **expressions)
        elif op_type == "Delete":
            self.backend.delete_item(table_name, key, **expressions)
        elif op_type == "Update":
            self.backend.update_item(table_name, key, update_expression=op["UpdateExpression"], **expressions)


__all__ = ["ORIGINAL_MODEL_NEW", "ORIGINAL_TRANSACT_WRITE_ITEMS", "install", "installed", "uninstall"]
