"""The infra/ template creates every stateful resource in moto, wired as the app expects."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from chalice.config import Config

from chalicelib.settings import Settings, output_to_env_name
from devstack.embedded_aws import TEMPLATE
from infra.scale_model import prod_settings

CHALICE_DIR = Path(__file__).resolve().parent.parent / ".chalice"
STAGES = ("dev", "prod")
API_GATEWAY_TIMEOUT = 29  # seconds: API Gateway's integration timeout (REST and WebSocket)
# cfn-lint's I3011 list: what holds data and is deleted by default with its stack
STATEFUL_TYPES = {"AWS::DynamoDB::Table", "AWS::SecretsManager::Secret", "AWS::SQS::Queue", "AWS::S3::Bucket",
                  "AWS::Logs::LogGroup", "AWS::KMS::Key"}


def template() -> dict[str, Any]:
    decoded, errors = decode(str(TEMPLATE))
    assert not errors
    return dict(decoded)


def function_config(stage: str, function: str) -> Config:
    config_from_disk = json.loads((CHALICE_DIR / "config.json").read_text())
    return Config(chalice_stage=stage, function_name=function, config_from_disk=config_from_disk)


def consumer_timeout(stage: str) -> int:
    timeout = function_config(stage, "on_job").lambda_timeout
    assert isinstance(timeout, int)
    return timeout


def test_output_keys_map_to_environment_names() -> None:
    assert output_to_env_name("ConnectionsTable") == "CONNECTIONS_TABLE"
    assert output_to_env_name("JobsQueueUrl") == "JOBS_QUEUE_URL"


def test_outputs_configure_the_app(provisioned: dict[str, str]) -> None:
    settings = Settings.from_env(provisioned)
    assert settings.connections_table == "webim-test-connections"
    assert settings.jobs_queue_url.endswith("/webim-test-ack-timeout")
    assert provisioned["JOBS_QUEUE_NAME"] == "webim-test-ack-timeout"


def test_tables_have_the_documented_keys(provisioned: dict[str, str]) -> None:
    client = boto3.client("dynamodb")
    expected = {
        "CONNECTIONS_TABLE": ("S", "S"),
        "MESSAGES_TABLE": ("S", "N"),
        "MEMBERS_TABLE": ("S", "S"),
    }
    for env_name, (pk_type, sk_type) in expected.items():
        table = client.describe_table(TableName=provisioned[env_name])["Table"]
        assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
            ("pk", "HASH"), ("sk", "RANGE"),
        ]
        types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
        index_keys = {"last_time": "N"} if env_name == "MEMBERS_TABLE" else {}  # the by_last_time index
        assert types == {"pk": pk_type, "sk": sk_type, **index_keys}
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_members_are_listed_newest_first_by_an_index(provisioned: dict[str, str]) -> None:
    table = boto3.client("dynamodb").describe_table(TableName=provisioned["MEMBERS_TABLE"])["Table"]
    index, = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_last_time" and index["Projection"]["ProjectionType"] == "ALL"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("pk", "HASH"), ("last_time", "RANGE"),
    ]


def test_ack_timeout_queue_redrives_to_the_dead_letter_queue(provisioned: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=provisioned["JOBS_QUEUE_URL"], AttributeNames=["All"]
    )["Attributes"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=provisioned["DEAD_LETTER_QUEUE_URL"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    # Lambda's rule for an SQS event source: at least the consuming function's timeout
    assert int(attributes["VisibilityTimeout"]) >= consumer_timeout("dev")


def test_frontend_bucket_exists(provisioned: dict[str, str]) -> None:
    boto3.client("s3").head_bucket(Bucket=provisioned["FRONTEND_BUCKET"])


def test_frontend_bucket_is_private_behind_the_cdn() -> None:
    # moto's CloudFormation ignores PublicAccessBlockConfiguration, so read the template.
    template, errors = decode(str(TEMPLATE))
    assert not errors
    bucket = template["Resources"]["FrontendBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    statement = template["Resources"]["FrontendBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Principal"] for s in statement] == [{"Service": "cloudfront.amazonaws.com"}]


# --- photos (issue 15, protocol.md §14.1) ----------------------------------------------------


def test_media_bucket_is_private_retained_and_expires_unattached_uploads() -> None:
    resource = template()["Resources"]["MediaBucket"]
    assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
    bucket = resource["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    (cors,) = bucket["CorsConfiguration"]["CorsRules"]
    assert {"GET", "POST"} <= set(cors["AllowedMethods"]) and cors["AllowedOrigins"] == ["*"]
    # (the retention rule is an Fn::If: tests/test_retention.py)
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"] if "Id" in rule}
    assert rules["unattached-uploads"]["TagFilters"] == [{"Key": "webim", "Value": "pending"}]
    assert rules["unattached-uploads"]["ExpirationInDays"] == 1
    assert rules["incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _copy_source_allowed(statement: dict[str, Any], copy_source: str | None) -> bool:
    """A statement with no condition allows; the one condition these statements use is a
    copy source pattern (s3:x-amz-copy-source)."""
    import fnmatch

    condition = statement.get("Condition")
    if condition is None:
        return True
    assert list(condition) == ["StringLike"] and list(condition["StringLike"]) == ["s3:x-amz-copy-source"]
    (sources,) = condition["StringLike"].values()
    return copy_source is not None and any(fnmatch.fnmatchcase(copy_source, s) for s in _as_list(sources))


def _allowed(statements: list[dict[str, Any]], action: str, resource: str, copy_source: str | None) -> bool:
    import fnmatch

    return any(action in _as_list(s["Action"])
               and any(fnmatch.fnmatchcase(resource, r) for r in _as_list(s["Resource"]))
               and _copy_source_allowed(s, copy_source)
               for s in statements)


def _media_statements(name: str, stage: str) -> list[dict[str, Any]]:
    """The policy's media statements, their patterns renamed to the test stack's ("test")."""
    policy = json.loads((CHALICE_DIR / name).read_text())
    media = [s for s in policy["Statement"] if s["Sid"].startswith("Media")]
    assert {s["Sid"] for s in media} == {"MediaUploads", "MediaObjects", "MediaCopies", "MediaList", "MediaReports",
                                         "MediaReportTags"}, name
    for statement in media:
        statement["Resource"] = statement["Resource"].replace(f"webim-{stage}-", "webim-test-")
        for values in statement.get("Condition", {}).values():
            for key, value in values.items():
                values[key] = [v.replace(f"webim-{stage}-", "webim-test-") for v in _as_list(value)]
    return media


def test_provisioned_media_bucket_is_the_one_the_policies_name(provisioned: dict[str, str]) -> None:
    """The functions may post (sign forms for), tag, read, copy from and delete uploads under u/;
    read and delete copies under m/, and write them only as a copy of an upload (so not even a
    form the app signed by mistake could write one: issue 21); list the bucket (a retried send
    finds its copy, and a missing key is S3's 404, not 403). Its name is CloudFormation's
    (<stack>-mediabucket-<random>), so the policies name that pattern."""
    bucket = provisioned["MEDIA_BUCKET"]
    boto3.client("s3").head_bucket(Bucket=bucket)  # (moto's CloudFormation ignores its CORS and lifecycle)
    upload, copy = f"arn:aws:s3:::{bucket}/u/owner/random", f"arn:aws:s3:::{bucket}/m/owner/random/nonce"
    for stage in STAGES:
        # (the consumer's policy is the shared one plus its queue statement: it signs GETs too)
        for name in (f"policy-{stage}.json", f"policy-{stage}-jobs.json"):
            media = _media_statements(name, stage)
            for action in ("s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:DeleteObject"):
                assert _allowed(media, action, upload, None), (name, action)
            for action in ("s3:GetObject", "s3:PutObjectTagging", "s3:DeleteObject"):
                assert _allowed(media, action, copy, None), (name, action)
            assert _allowed(media, "s3:PutObject", copy, f"{bucket}/u/owner/random")  # CopyObject
            assert not _allowed(media, "s3:PutObject", copy, None)  # a POST form, or a plain PUT
            assert not _allowed(media, "s3:PutObject", copy, f"{bucket}/m/owner/other/nonce")
            assert _allowed(media, "s3:ListBucket", f"arn:aws:s3:::{bucket}", None)
            # a report keeps the reported photo (protocol.md §17): a copy of a message's copy, tagged
            kept = f"arn:aws:s3:::{bucket}/r/r_id/3"
            assert _allowed(media, "s3:PutObject", kept, f"{bucket}/m/owner/random/nonce")
            assert _allowed(media, "s3:PutObjectTagging", kept, None)
            assert not _allowed(media, "s3:PutObject", kept, None)
            assert not _allowed(media, "s3:PutObject", kept, f"{bucket}/u/owner/random")
            # a closed report's copy is rewritten in place (its lifecycle clock starts at the close)
            assert _allowed(media, "s3:PutObject", kept, f"{bucket}/r/r_id/3")
            for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
                assert not _allowed(media, action, f"arn:aws:s3:::{bucket}/other", f"{bucket}/u/owner/random")


# --- safe under load and mistakes (issue 14) -------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_a_dead_batch_comes_back_within_the_retransmission_schedule(stage: str) -> None:
    """A batch that dies returns after the visibility timeout: at most the schedule's first
    step (the 10 s check comes back by 40 s), and never before the consumer's timeout, as
    Lambda requires (plus the batching window, which app.py's on_sqs_message leaves at 0)."""
    queue = template()["Resources"]["AckTimeoutQueue"]["Properties"]
    first_step = Settings.__dataclass_fields__["ack_timeout_seconds"].default * 3  # 10 s -> 40 s
    assert consumer_timeout(stage) <= queue["VisibilityTimeout"] <= first_step


@pytest.mark.parametrize("stage", STAGES)
def test_rest_function_gives_up_before_api_gateway(stage: str) -> None:
    timeout = function_config(stage, "api_handler").lambda_timeout
    assert isinstance(timeout, int)
    assert timeout < API_GATEWAY_TIMEOUT


def test_held_polls_have_their_own_concurrency_in_production() -> None:
    """The REST function (every held poll) is capped, so it cannot take the concurrency that
    $connect, $default and the SQS consumer share; dev has none (docs/deploy.md: a new account's
    limit of 10 leaves nothing to reserve)."""
    assert function_config("prod", "api_handler").reserved_concurrency == prod_settings().reserved_concurrency
    others = ("ws_connect", "ws_message", "ws_disconnect", "on_job", "sweep_long_poll_doorbells")
    assert all(function_config("prod", name).reserved_concurrency is None for name in others)
    assert function_config("dev", "api_handler").reserved_concurrency is None


def test_every_stateful_resource_says_what_happens_to_it() -> None:
    resources = template()["Resources"]
    stateful = {name: r for name, r in resources.items() if r["Type"] in STATEFUL_TYPES}
    assert {"ConnectionsTable", "MessagesTable", "MembersTable", "SigningSecret", "HostAuthSecret",
            "FrontendBucket", "MediaBucket", "AckTimeoutQueue", "DeadLetterQueue"} <= set(stateful)
    for name, resource in stateful.items():
        assert resource.get("DeletionPolicy") in ("Retain", "RetainExceptOnCreate", "Delete", "Snapshot"), name
        assert resource.get("UpdateReplacePolicy") in ("Retain", "Delete", "Snapshot"), name


def test_tables_and_secrets_outlive_their_stack() -> None:
    parsed = template()
    resources = parsed["Resources"]
    for name in ("ConnectionsTable", "MessagesTable", "MembersTable", "SigningSecret", "HostAuthSecret"):
        # Retained: CloudFormation would delete a secret at once, without a recovery window; but
        # not after a create that rolls back, which would leave them to block the next create
        assert (resources[name]["DeletionPolicy"], resources[name]["UpdateReplacePolicy"]) == (
            "RetainExceptOnCreate", "Retain")
    for name in ("ConnectionsTable", "MessagesTable", "MembersTable"):
        protection = resources[name]["Properties"]["DeletionProtectionEnabled"]
        assert protection == {"Fn::If": ["ProtectTables", True, False]}, name
    assert parsed["Parameters"]["DeletionProtection"]["Default"] == "true"
    assert parsed["Conditions"]["ProtectTables"] == {"Fn::Equals": [{"Ref": "DeletionProtection"}, "true"]}


def test_provisioned_tables_refuse_deletion(provisioned: dict[str, str]) -> None:
    client = boto3.client("dynamodb")
    for env_name in ("CONNECTIONS_TABLE", "MESSAGES_TABLE", "MEMBERS_TABLE"):
        assert client.describe_table(TableName=provisioned[env_name])["Table"]["DeletionProtectionEnabled"] is True
        with pytest.raises(client.exceptions.ClientError, match="DeletionProtectionEnabled"):
            client.delete_table(TableName=provisioned[env_name])

