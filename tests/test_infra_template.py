"""The infra/ template creates every stateful resource in moto, wired as the app expects."""
from __future__ import annotations

import json

import boto3
from cfnlint.decode import decode

from chalicelib.settings import Settings, output_to_env_name
from devstack.embedded_aws import TEMPLATE


def test_output_keys_map_to_environment_names() -> None:
    assert output_to_env_name("ConnectionsTable") == "CONNECTIONS_TABLE"
    assert output_to_env_name("AckTimeoutQueueUrl") == "ACK_TIMEOUT_QUEUE_URL"


def test_outputs_configure_the_app(provisioned: dict[str, str]) -> None:
    settings = Settings.from_env(provisioned)
    assert settings.connections_table == "webim-test-connections"
    assert settings.ack_timeout_queue_url.endswith("/webim-test-ack-timeout")
    assert provisioned["ACK_TIMEOUT_QUEUE_NAME"] == "webim-test-ack-timeout"


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
        QueueUrl=provisioned["ACK_TIMEOUT_QUEUE_URL"], AttributeNames=["All"]
    )["Attributes"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=provisioned["DEAD_LETTER_QUEUE_URL"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert int(attributes["VisibilityTimeout"]) >= 60  # covers the Lambda timeout


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
