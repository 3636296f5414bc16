"""Contract: the local stack's base-table Query (devstack/moto_queries.py) answers every query
exactly as plain moto does; it only stops sorting the whole table to find one partition."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack import moto_queries
from devstack.embedded_aws import REGION, fake_credentials

TABLE = "contract-queries"


@pytest.fixture(autouse=True)
def restore_patch() -> Iterator[None]:
    saved_env = dict(os.environ)
    fake_credentials()
    was = moto_queries.installed()
    try:
        yield
    finally:
        (moto_queries.install if was else moto_queries.uninstall)()
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g")],
            GlobalSecondaryIndexes=[{"IndexName": "by-g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"},
                                                                        {"AttributeName": "sk", "KeyType": "RANGE"}],
                                     "Projection": {"ProjectionType": "ALL"}}])
        for p in range(30):  # many partitions of different sizes, some items in the index
            for i in range(p % 7 + 1):
                item = {"pk": {"S": f"U#{p}"}, "sk": {"S": f"C#{i:02d}"}, "n": {"N": str(i * p)}}
                if i % 2:
                    item["g"] = {"S": f"G#{p % 3}"}
                dynamodb.put_item(TableName=TABLE, Item=item)
        yield dynamodb


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "U#6"}}},
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "U#6"}},
     "ScanIndexForward": False, "ConsistentRead": True},
    {"KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
     "ExpressionAttributeValues": {":p": {"S": "U#13"}, ":s": {"S": "C#0"}}},
    {"KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
     "ExpressionAttributeValues": {":p": {"S": "U#20"}, ":a": {"S": "C#01"}, ":b": {"S": "C#04"}}},
    {"KeyConditionExpression": "pk = :p AND sk > :a", "ExpressionAttributeValues": {":p": {"S": "U#27"},
                                                                                  ":a": {"S": "C#02"}}},
    {"KeyConditionExpression": "pk = :p", "FilterExpression": "n > :z",
     "ExpressionAttributeValues": {":p": {"S": "U#20"}, ":z": {"N": "20"}}},
    {"KeyConditionExpression": "pk = :p", "ProjectionExpression": "sk", "Limit": 2,
     "ExpressionAttributeValues": {":p": {"S": "U#13"}}},
    {"KeyConditionExpression": "pk = :p", "Select": "COUNT", "ExpressionAttributeValues": {":p": {"S": "U#6"}}},
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "U#no-such"}}},
    {"IndexName": "by-g", "KeyConditionExpression": "g = :g", "ExpressionAttributeValues": {":g": {"S": "G#1"}}},
]


def every_page(client: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    pages, start = [], None
    while True:
        page = client.query(TableName=TABLE, **query, **({"ExclusiveStartKey": start} if start else {}))
        page.pop("ResponseMetadata")
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if not start:
            return pages


@pytest.mark.parametrize("query", QUERIES)
def test_the_partition_query_answers_as_plain_moto(client: Any, query: dict[str, Any]) -> None:
    moto_queries.uninstall()
    plain = every_page(client, query)
    moto_queries.install()
    assert every_page(client, query) == plain
    assert any(page.get("Count") for page in plain) or query["ExpressionAttributeValues"].get(":p") == {
        "S": "U#no-such"}


def test_a_query_of_an_absent_partition_creates_nothing(client: Any) -> None:
    moto_queries.install()
    client.query(TableName=TABLE, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "U#x"}})
    assert client.scan(TableName=TABLE, Select="COUNT")["Count"] == sum(p % 7 + 1 for p in range(30))


def test_errors_are_plain_motos(client: Any) -> None:
    bad = {"KeyConditionExpression": "sk = :s", "ExpressionAttributeValues": {":s": {"S": "C#01"}}}
    moto_queries.uninstall()
    with pytest.raises(ClientError) as plain:
        client.query(TableName=TABLE, **bad)
    moto_queries.install()
    with pytest.raises(ClientError) as patched:
        client.query(TableName=TABLE, **bad)
    assert patched.value.response["Error"] == plain.value.response["Error"]


def test_a_partition_query_does_not_walk_the_table(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    walks: list[str] = []
    real = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: walks.append(self.name) or real(self))
    query = QUERIES[0]
    moto_queries.uninstall()
    client.query(TableName=TABLE, **query)
    assert walks == [TABLE]  # plain moto sorts every item of the table to find the partition
    walks.clear()
    moto_queries.install()
    client.query(TableName=TABLE, **query)
    assert walks == []
