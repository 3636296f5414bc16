"""Retention of closed reports (issue 26, data minimisation): with REPORT_RETENTION_DAYS set,
the operator's close sets `expires_at` (the close + the period; the members table's TTL) on the
report and its `PS#closed` list entry in the close's own transaction, and tags the report's
photo copy (r/) webim=report-closed, which the media bucket's rule (present only when the
stack parameter is > 0) expires; a reopen removes both. Open reports never expire; 0 (the
default) writes nothing."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.principal import Identity
from chalicelib.settings import Settings, output_to_env_name
from tests.test_media import ALICE, BOB, CONV, PNG, Person, World
from tests.test_retention import template

OPERATOR = Identity("user", "op-retains")
DAY = 86400

Item = dict[str, Any]


def report_items(world: World, report_id: str) -> tuple[Item, Item]:
    """The report and its one list entry, read back from the members table."""
    report = world.members.get_item(Key={"pk": f"P#{report_id}", "sk": "#"}, ConsistentRead=True)["Item"]
    entries = [item for item in world.members.scan(ConsistentRead=True)["Items"]
               if str(item["pk"]).startswith("PS#") and item["report_id"] == report_id]
    (entry,) = entries  # moved, never copied
    assert entry["pk"] == f"PS#{report['status']}"
    return report, entry


def photo_report(world: World) -> tuple[str, str]:
    """Alice sends a photo, Bob reports it: the report id and its photo copy's key."""
    alice, bob = Person(world, ALICE, "ws"), Person(world, BOB, "ws")
    seq = alice.send_photo(alice.upload(PNG))["seq"]
    report_id = str(bob.ask(action="report", conversation_id=CONV, seq=seq, reason="abuse")["report_id"])
    return report_id, f"r/{report_id}/{seq}"


def set_status(world: World, report_id: str, status: str) -> None:
    answer = world.services.operator.set_report_status(OPERATOR, report_id, status)
    assert answer == {"report_id": report_id, "status": status}


def tag(world: World, key: str) -> str:
    (only,) = world.tag(key)
    assert only["Key"] == "webim"
    return only["Value"]


def test_a_closed_report_and_its_entry_expire_after_the_days_and_a_reopen_keeps_them(
        provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "30"})
    report_id, _ = photo_report(world)
    assert all("expires_at" not in item for item in report_items(world, report_id))  # open: pending evidence

    before = int(time.time())
    set_status(world, report_id, "closed")
    after = int(time.time())
    report, entry = report_items(world, report_id)
    assert report["status"] == "closed"
    assert before + 30 * DAY <= report["expires_at"] <= after + 30 * DAY
    assert entry["expires_at"] == report["expires_at"]  # the list entry goes with its report

    set_status(world, report_id, "open")
    report, entry = report_items(world, report_id)
    assert report["status"] == "open"
    assert "expires_at" not in report and "expires_at" not in entry
    assert world.services.operator.report(report_id)["status"] == "open"


def test_open_reports_never_expire(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "1"})
    report_id, copy = photo_report(world)
    closed_id, closed_copy = photo_report(world)
    set_status(world, closed_id, "closed")  # the retention is on: a closed one expires...
    assert all("expires_at" in item for item in report_items(world, closed_id))
    assert tag(world, closed_copy) == "report-closed"
    set_status(world, report_id, "open")  # ...an open one (the same status: nothing moves) never
    assert all("expires_at" not in item for item in report_items(world, report_id))
    assert tag(world, copy) == "attached"


def test_with_no_retention_a_close_writes_no_expiry_and_keeps_the_photo(provisioned: dict[str, str]) -> None:
    assert Settings.from_env(provisioned).report_retention_days == 0  # the default: kept
    world = World(provisioned)
    report_id, copy = photo_report(world)
    set_status(world, report_id, "closed")
    report, entry = report_items(world, report_id)
    assert report["status"] == "closed"
    assert "expires_at" not in report and "expires_at" not in entry
    assert tag(world, copy) == "attached"


def test_the_photo_copy_is_tagged_on_close_untagged_on_reopen_and_retagged_by_a_repeat(
        provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "30"})
    report_id, copy = photo_report(world)
    assert tag(world, copy) == "attached"
    set_status(world, report_id, "closed")
    assert tag(world, copy) == "report-closed"
    set_status(world, report_id, "open")
    assert tag(world, copy) == "attached"

    # a close whose tagging was lost (a crash after the transaction): closing again re-tags
    set_status(world, report_id, "closed")
    world.s3.put_object_tagging(Bucket=world.bucket, Key=copy,
                                Tagging={"TagSet": [{"Key": "webim", "Value": "attached"}]})
    expires = report_items(world, report_id)[0]["expires_at"]
    set_status(world, report_id, "closed")
    assert tag(world, copy) == "report-closed"
    assert report_items(world, report_id)[0]["expires_at"] == expires  # the repeat moved nothing
    assert world.s3.get_object(Bucket=world.bucket, Key=copy)["Body"].read() == PNG  # S3's rule deletes


def test_a_close_whose_photo_copy_is_gone_still_closes(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "30"})
    report_id, copy = photo_report(world)
    world.s3.delete_object(Bucket=world.bucket, Key=copy)  # e.g. expired as pending: its tagging was lost
    set_status(world, report_id, "closed")
    assert "expires_at" in report_items(world, report_id)[0]


def test_the_setting_is_read_from_the_environment(provisioned: dict[str, str]) -> None:
    assert output_to_env_name("ReportRetentionDays") == "REPORT_RETENTION_DAYS"  # the stack output's name
    assert provisioned["REPORT_RETENTION_DAYS"] == "0"  # the stack outputs it (the embedded one too)
    assert Settings.from_env({**provisioned, "REPORT_RETENTION_DAYS": "7"}).report_retention_days == 7


def test_the_bucket_expires_closed_report_photos_only_when_the_parameter_is_set() -> None:
    """moto does not apply a stack's lifecycle: the rule is read from the template."""
    decoded = template()
    assert decoded["Conditions"]["KeepReports"] == {"Fn::Equals": [{"Ref": "ReportRetentionDays"}, 0]}
    rules = decoded["Resources"]["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (conditional,) = [rule["Fn::If"] for rule in rules if "Fn::If" in rule and rule["Fn::If"][0] == "KeepReports"]
    condition, kept, retained = conditional
    assert kept == {"Ref": "AWS::NoValue"}
    assert retained == {"Id": "closed-report-photos", "Status": "Enabled", "Prefix": "r/",
                        "TagFilters": [{"Key": "webim", "Value": "report-closed"}],
                        "ExpirationInDays": {"Ref": "ReportRetentionDays"}}
    unconditional = [rule for rule in rules if "Fn::If" not in rule]
    assert all(not str(rule.get("Prefix", "")).startswith("r/") for rule in unconditional)  # 0: kept
    parameter = decoded["Parameters"]["ReportRetentionDays"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (
        "Number", 0, 0, 36500)
    assert decoded["Outputs"]["ReportRetentionDays"]["Value"] == {"Ref": "ReportRetentionDays"}
    # the reports live in the members table: its TTL is what deletes them
    ttl = decoded["Resources"]["MembersTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    assert "kept whatever" not in decoded["Parameters"]["MessageRetentionDays"]["Description"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_chalice_stages_carry_the_setting(stage: str) -> None:
    import json
    from pathlib import Path

    config = json.loads((Path(__file__).resolve().parent.parent / ".chalice" / "config.json").read_text())
    assert config["stages"][stage]["environment_variables"]["REPORT_RETENTION_DAYS"] == "0"


def test_the_photo_copy_counts_its_days_from_the_close_not_from_the_report(provisioned: dict[str, str]) -> None:
    """S3 counts a lifecycle rule's days from the object's creation: a report closed 40 days
    after it was filed, under a 30-day retention, must not lose its photo at once. The close
    rewrites the copy (a copy onto itself, its type kept), so its clock starts at the close."""
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "30"})
    report_id, copy = photo_report(world)
    filed = s3_object(world, copy)
    filed.last_modified -= timedelta(days=40)  # (test-only) the report was filed 40 days ago
    aged = world.s3.head_object(Bucket=world.bucket, Key=copy)
    before = datetime.now(UTC).replace(microsecond=0)
    set_status(world, report_id, "closed")
    closed = world.s3.head_object(Bucket=world.bucket, Key=copy)
    assert aged["LastModified"] < before - timedelta(days=39) and closed["LastModified"] >= before
    assert closed["ContentType"] == aged["ContentType"] == "image/png"
    assert tag(world, copy) == "report-closed"
    assert world.s3.get_object(Bucket=world.bucket, Key=copy)["Body"].read() == PNG


def s3_object(world: World, key: str) -> Any:
    """moto's own record of an object (test-only: to age it, as time would)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[world.bucket].keys[key]


def test_an_expired_report_is_neither_read_listed_nor_reopened_before_ttl_deletes_it(
        provisioned: dict[str, str]) -> None:
    """DynamoDB's TTL deletes up to two days late: reads go by `expires_at` themselves. The
    operator sees when a closed report goes (`expires`, ms)."""
    world = World({**provisioned, "REPORT_RETENTION_DAYS": "30"})
    report_id, _ = photo_report(world)
    set_status(world, report_id, "closed")
    report, entry = report_items(world, report_id)
    shown = world.services.operator.report(report_id)
    assert shown["expires"] == report["expires_at"] * 1000
    listed = world.services.operator.reports("closed", None, None)["reports"]
    assert [r["report_id"] for r in listed] == [report_id]
    past = int(time.time()) - 60  # (test-only) its time came; TTL has not deleted it yet
    for item in (report, entry):
        world.members.update_item(Key={"pk": item["pk"], "sk": item["sk"]}, UpdateExpression="SET expires_at = :t",
                                  ExpressionAttributeValues={":t": past})
    with pytest.raises(Exception, match="no such report"):
        world.services.operator.report(report_id)
    assert world.services.operator.reports("closed", None, None)["reports"] == []
    with pytest.raises(Exception, match="no such report"):
        world.services.operator.set_report_status(OPERATOR, report_id, "open")
    assert "expires_at" in report_items(world, report_id)[0]  # not revived
