"""One-item DynamoDB transactions per second and RSS on moto in-process, with 0 and 5,000 items
already stored, on plain moto and with devstack/moto_transactions installed. Each case runs in a
fresh process.

    .venv/bin/python -m bench.moto_transactions
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

CALLS = 300


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(patched: bool, stored: int) -> dict[str, float]:
    import boto3
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    from devstack import moto_transactions
    from devstack.embedded_aws import REGION, fake_credentials

    fake_credentials()
    if patched:
        moto_transactions.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName="messages", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "N"}])
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        body = {"S": "a message of about a hundred characters, as a chat message might be, more or less."}
        for i in range(stored):  # 50 conversations
            backend.put_item("messages", {"pk": {"S": f"c{i % 50}"}, "sk": {"N": str(i)}, "body": body})
        rss_before = rss_mb()
        start = time.perf_counter()
        for i in range(CALLS):
            client.transact_write_items(TransactItems=[{"Put": {
                "TableName": "messages", "Item": {"pk": {"S": "c0"}, "sk": {"N": str(10**6 + i)}, "body": body},
                "ConditionExpression": "attribute_not_exists(pk)"}}])
        elapsed = time.perf_counter() - start
        return {"per_second": CALLS / elapsed, "rss_before_mb": rss_before, "rss_after_mb": rss_mb()}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1] == "patched", int(sys.argv[2]))))
        return
    print(f"{CALLS} one-item transactions after N stored items, fresh process each")
    print(f"{'moto':8} {'stored':>6} {'tx/s':>8} {'RSS before':>11} {'RSS after':>10}")
    for mode in ("plain", "patched"):
        for stored in (0, 5000):
            out = subprocess.run([sys.executable, "-m", "bench.moto_transactions", mode, str(stored)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            print(f"{mode:8} {stored:>6} {r['per_second']:>8.1f} "
                  f"{r['rss_before_mb']:>9.0f}MB {r['rss_after_mb']:>8.0f}MB")


if __name__ == "__main__":
    main()
