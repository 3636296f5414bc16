"""storage/dynamo.transact: a refused transaction says which named item's condition failed, and
the item that condition saw, whatever the item's position (no decoding by list index)."""
from __future__ import annotations

from typing import Any

import pytest

from chalicelib.storage.dynamo import TransactionRefused, transact
from tests.conftest import table


def put(name: str, pk: str, **extra: Any) -> dict[str, Any]:
    return {"Put": {"TableName": name, "Item": {"pk": pk, "sk": "x", **extra},
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}


@pytest.mark.parametrize("taken_at", [0, 1, 2])
def test_the_refusal_names_the_item_whose_condition_failed(provisioned: dict[str, str], taken_at: int) -> None:
    members = table(provisioned["MEMBERS_TABLE"])
    names = ["first", "second", "third"]
    members.put_item(Item={"pk": f"t-{taken_at}", "sk": "x", "note": "there before"})
    with pytest.raises(TransactionRefused) as refused:
        transact(members.meta.client, [(n, put(members.name, f"t-{i}", note="new")) for i, n in enumerate(names)])
    taken = names[taken_at]
    assert refused.value.failed_names == [taken]
    assert refused.value.failed(taken) and not any(refused.value.failed(n) for n in names if n != taken)
    assert refused.value.seen(taken) == {"pk": f"t-{taken_at}", "sk": "x", "note": "there before"}
    assert not refused.value.conflict and refused.value.only("ConditionalCheckFailed")
    # nothing of the transaction was written
    assert [members.get_item(Key={"pk": f"t-{i}", "sk": "x"}).get("Item", {}).get("note") for i in range(3)] == [
        "there before" if i == taken_at else None for i in range(3)]


def test_a_transaction_that_passes_writes_every_item(provisioned: dict[str, str]) -> None:
    members = table(provisioned["MEMBERS_TABLE"])
    transact(members.meta.client, [("a", put(members.name, "a")), ("b", put(members.name, "b"))])
    assert all(members.get_item(Key={"pk": k, "sk": "x"}).get("Item") for k in ("a", "b"))


def test_names_are_unique(provisioned: dict[str, str]) -> None:
    members = table(provisioned["MEMBERS_TABLE"])
    with pytest.raises(AssertionError):
        transact(members.meta.client, [("a", put(members.name, "a")), ("a", put(members.name, "b"))])
