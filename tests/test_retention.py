"""Retention (issue 26 point 5, its first part): with MESSAGE_RETENTION_DAYS set, every message
item a conversation stores (1:1 and group messages, group events, a delete's tombstone event)
carries `expires_at`, its time + the period, which the messages table's TTL names; heads,
memberships and reports carry none; the media bucket expires photos (m/) after the same days,
from the same stack parameter that gives the functions the setting. Default: kept."""
from __future__ import annotations

import itertools
from typing import Any

import boto3
import pytest

from chalicelib.logic.frames import SendRequest
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.settings import Settings
from devstack.embedded_aws import TEMPLATE
from tests.signal_fixtures import World

ANN = Identity("user", "ann-retains")
BEN = Identity("user", "ben-retains")
CONV = direct_conversation_id(ANN, BEN)
DAY = 86400
_ids = itertools.count()

Frame = dict[str, Any]


def send(world: World, sender: Identity, to: Identity, text: str) -> Frame:
    request = SendRequest.parse({"id": f"k{next(_ids)}", "text": text, "to": to.to_json()})
    return world.services.messaging.send(sender, request)


def message_items(world: World) -> list[Frame]:
    messages, _ = world.stored()
    return [item for item in messages if not str(item["pk"]).startswith(("I#", "R#")) and int(item["sk"]) > 0]


def test_messages_are_kept_by_default(provisioned: dict[str, str]) -> None:
    assert Settings.from_env(provisioned).message_retention_days == 0
    world = World(provisioned)
    send(world, ANN, BEN, "hello")
    (item,) = message_items(world)
    assert "expires_at" not in item


def test_with_a_retention_every_message_item_expires_and_nothing_else(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "MESSAGE_RETENTION_DAYS": "30"})
    send(world, ANN, BEN, "hello")
    send(world, BEN, ANN, "hi")
    ann, ben = world.connect("ws", ANN), world.connect("ws", BEN)
    assert world.ask(ann, action="delete", conversation_id=CONV, seq=1)["type"] == "deleted"  # a tombstone event
    group = world.ask(ann, action="group_create", title="retained", members=[BEN.to_json()])["conversation_id"]
    assert world.ask(ben, action="send", conversation_id=group, text="in the group")["type"] == "sent"
    assert world.ask(ben, action="report", conversation_id=CONV, reason="other")["type"] == "reported"

    items = message_items(world)
    kinds = sorted((str(i["pk"]), int(i["sk"])) for i in items)
    assert kinds == sorted([(CONV, 1), (CONV, 2), (CONV, 3), (group, 1), (group, 2)])
    for item in items:
        assert item["expires_at"] == int(item["time"]) // 1000 + 30 * DAY, item
    messages, members = world.stored()
    heads = [i for i in messages if int(i["sk"]) == 0 and not str(i["pk"]).startswith(("I#", "R#"))]
    assert heads and all("expires_at" not in head for head in heads)  # a head anchors the seq: kept
    assert all("expires_at" not in item for item in members)  # memberships, reports: kept


def test_the_stack_parameter_gives_the_functions_the_setting(aws: None) -> None:
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="webim-ret", TemplateBody=TEMPLATE.read_text(), Parameters=[
        {"ParameterKey": "Stage", "ParameterValue": "ret"},
        {"ParameterKey": "WithCdn", "ParameterValue": "false"},
        {"ParameterKey": "WithSecrets", "ParameterValue": "false"},
        {"ParameterKey": "WithAlarms", "ParameterValue": "false"},
        {"ParameterKey": "WithWaitApi", "ParameterValue": "false"},
        {"ParameterKey": "MessageRetentionDays", "ParameterValue": "30"},
    ])
    stack = cloudformation.describe_stacks(StackName="webim-ret")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["MessageRetentionDays"] == "30"
    assert Settings.from_env({**provisioned_names(outputs), "MESSAGE_RETENTION_DAYS": outputs["MessageRetentionDays"]}
                             ).message_retention_days == 30
    # the table's TTL names the attribute (moto applies no TTL from a stack: read the template)
    ttl = template()["Resources"]["MessagesTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, errors = decode(str(TEMPLATE))
    assert not errors
    return dict(decoded)


def test_the_photos_expire_after_the_same_days_only_when_set() -> None:
    """The media bucket's rule (moto does not apply a stack's lifecycle: read from the template):
    absent while MessageRetentionDays is 0, else photos under m/ expire after that many days."""
    decoded = template()
    assert decoded["Conditions"]["KeepMessages"] == {"Fn::Equals": [{"Ref": "MessageRetentionDays"}, 0]}
    rules = decoded["Resources"]["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (conditional,) = [rule["Fn::If"] for rule in rules if "Fn::If" in rule and rule["Fn::If"][0] == "KeepMessages"]
    condition, kept, retained = conditional
    assert (condition, kept) == ("KeepMessages", {"Ref": "AWS::NoValue"})
    assert retained == {"Id": "message-photos", "Status": "Enabled", "Prefix": "m/",
                        "ExpirationInDays": {"Ref": "MessageRetentionDays"}}
    parameter = decoded["Parameters"]["MessageRetentionDays"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 0, 0)
    assert decoded["Outputs"]["MessageRetentionDays"]["Value"] == {"Ref": "MessageRetentionDays"}


def provisioned_names(outputs: dict[str, str]) -> dict[str, str]:
    """The required settings (names only: nothing is called)."""
    return {"CONNECTIONS_TABLE": outputs["ConnectionsTable"], "MESSAGES_TABLE": outputs["MessagesTable"],
            "MEMBERS_TABLE": outputs["MembersTable"], "JOBS_QUEUE_URL": "q", "SIGNING_SECRET_ID": "s",
            "HOST_AUTH_SECRET_ID": "h"}


def test_the_cost_model_says_what_a_retention_changes() -> None:
    """bench/cost.py (performance.md, "Retention"): kept, storage grows with every day; with a
    retention it stays at that many days of traffic; `expires_at` costs no write unit."""
    from bench.cost import message_item_bytes, storage_section, stored_after

    daily = stored_after(1)
    assert daily.items == 11_000_000  # the seed's 1:1 and group messages of a day
    assert stored_after(30).items == 30 * daily.items
    assert stored_after(365 * 2).dollars_per_day == pytest.approx(2 * stored_after(365).dollars_per_day)
    assert message_item_bytes(retention=False) - 100 < message_item_bytes() - 100 <= 1024  # one WRU either way
    table = storage_section()
    assert "| 30 days |" in table and "and growing" in table
