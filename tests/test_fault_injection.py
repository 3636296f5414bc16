"""The local stack's fault mode (devstack/faults.py): each knob, seeded, on the real boto3
paths (moto), and how the invoker answers a "Lambda" that died."""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice import Chalice
from websockets.asyncio.client import connect

from devstack import faults
from devstack.events import sqs_event
from devstack.faults import FaultInjector, FaultRates, LambdaDeath
from devstack.invoker import LambdaInvoker
from devstack.sqs_source import SqsEventSource
from tests import recording_app

TABLE = "faults-probe"


@pytest.fixture
def install() -> Iterator[Callable[..., FaultInjector]]:
    """Switch faults on for one test (off again after it)."""
    def on(**rates: Any) -> FaultInjector:
        return faults.install(FaultRates(**rates))

    try:
        yield on
    finally:
        faults.uninstall()


@pytest.fixture
def dynamodb(aws: None) -> Callable[[], Any]:
    """A table, and a maker of fresh clients (a session made after `install` has the hooks)."""
    boto3.client("dynamodb").create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    return lambda: boto3.session.Session().client("dynamodb")


def stored(key: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": key}}).get("Item")
    return item


def put(client: Any, key: str, **extra: Any) -> None:
    client.put_item(TableName=TABLE, Item={"pk": {"S": key}}, **extra)


def test_rates_parse_and_typos_are_refused() -> None:
    rates = FaultRates.parse("seed=7, error=0.02,death=0.01,dup_job=0.05,twice=0.01,gone=0.02")
    assert rates == FaultRates(seed=7, error=0.02, death=0.01, dup_job=0.05, twice=0.01, gone=0.02)
    assert FaultRates.parse("") == FaultRates() and not FaultRates().any
    for bad in ("eror=0.1", "error", "error=1.5", "death=-0.1", "seed=x"):
        with pytest.raises(ValueError):
            FaultRates.parse(bad)


def test_off_by_default() -> None:
    assert faults.from_environment({}) is None
    assert faults.from_environment({"WEBIM_FAULTS": "seed=3"}) is None  # no rate: nothing to inject
    assert faults.current() is None


def test_the_same_seed_draws_the_same_faults() -> None:
    def draws(seed: int) -> list[bool]:
        injector = FaultInjector(FaultRates(seed=seed, error=0.3))
        return [injector.chance("error") for _ in range(200)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert 30 < sum(draws(1)) < 90  # about 30 %


def test_error_fails_the_call_as_exhausted_retries_do_and_does_nothing(
        install: Callable[..., FaultInjector], dynamodb: Callable[[], Any]) -> None:
    injector = install(seed=1, error=1.0)
    client = dynamodb()
    with faults.invocation(), pytest.raises(ClientError) as failed:
        put(client, "k1")
    error = failed.value.response
    assert error["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert error["ResponseMetadata"]["MaxAttemptsReached"] is True
    assert isinstance(failed.value, client.exceptions.ProvisionedThroughputExceededException)
    assert stored("k1") is None and injector.counts["error"] == 1
    put(client, "k2")  # outside an invocation (the stack's own calls): no fault
    assert stored("k2") is not None


def test_death_before_or_after_a_call_escapes_except_exception(
        install: Callable[..., FaultInjector], dynamodb: Callable[[], Any]) -> None:
    injector = install(seed=5, death=1.0)
    client = dynamodb()
    outcomes = []
    for i in range(20):
        counts_before = injector.counts["death_after"]
        with pytest.raises(LambdaDeath):
            try:
                with faults.invocation():
                    put(client, f"d{i}")
            except Exception:  # the app's handlers: a death is not theirs to catch
                pytest.fail("a death was caught as an error")
        died_after = injector.counts["death_after"] > counts_before
        outcomes.append(died_after)
        # before: nothing sent; after: the call ran, its answer never arrived
        assert (stored(f"d{i}") is not None) == died_after
    assert any(outcomes) and not all(outcomes)  # both kinds, in the seed's order
    assert injector.counts["death"] == 20


def test_twice_runs_the_call_again_after_its_answer_is_lost(
        install: Callable[..., FaultInjector], dynamodb: Callable[[], Any]) -> None:
    injector = install(seed=1, twice=1.0)
    client = dynamodb()
    with faults.invocation():
        client.update_item(TableName=TABLE, Key={"pk": {"S": "n"}}, UpdateExpression="ADD n :one",
                           ExpressionAttributeValues={":one": {"N": "1"}})
        # a conditional write: its first attempt succeeded, so its retry fails the condition
        with pytest.raises(client.exceptions.ConditionalCheckFailedException):
            put(client, "once", ConditionExpression="attribute_not_exists(pk)")
    assert (stored("n") or {})["n"] == {"N": "2"}
    assert stored("once") is not None
    assert injector.counts["twice"] == 2


def test_a_scripted_fault_hits_exactly_the_call_named(
        install: Callable[..., FaultInjector], dynamodb: Callable[[], Any]) -> None:
    injector = install()  # no rates: only the script
    injector.script("dynamodb.PutItem", "death_after", skip=1)
    client = dynamodb()
    with faults.invocation():
        put(client, "first")  # let through
        with pytest.raises(LambdaDeath):
            put(client, "second")  # done, then the death
        put(client, "third")  # a script strikes once
    assert all(stored(k) is not None for k in ("first", "second", "third"))


def test_gone_answers_410_for_a_live_connection(install: Callable[..., FaultInjector], gateway: str) -> None:
    """The callback API says 410 to the app's push while the socket is open (here aimed at one
    connection; `gone=` draws it at a rate); the next push reaches the same socket."""
    injector = install()
    callback = boto3.session.Session().client("apigatewaymanagementapi", endpoint_url=os.environ["CALLBACK_URL"],
                                              region_name="us-east-1")

    def post_as_app(connection_id: str, data: bytes) -> str:
        try:
            with faults.invocation():
                callback.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    async def scenario() -> tuple[str, str, str]:
        async with connect(f"ws://{gateway}/ws") as ws:
            await ws.send("hello")
            connection_id = json.loads(await ws.recv())["connection_id"]
            injector.force_gone(connection_id)
            refused = await asyncio.to_thread(post_as_app, connection_id, b"lost")
            delivered = await asyncio.to_thread(post_as_app, connection_id, b"arrives")
            return refused, delivered, str(await ws.recv())

    assert asyncio.run(scenario()) == ("GoneException", "ok", "arrives")
    assert injector.counts["gone"] == 1
    rated = FaultInjector(FaultRates(seed=2, gone=0.5))
    with rated.invocation():
        assert 60 < sum(rated.gone("c") for _ in range(200)) < 140
    assert not rated.gone("c")  # outside an invocation: never


@pytest.fixture
def jobs_queue(aws: None) -> Iterator[tuple[str, Callable[[], None]]]:
    recording_app.reset()
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="recording-jobs")["QueueUrl"]
    executor = ThreadPoolExecutor(max_workers=4)
    source = SqsEventSource(LambdaInvoker(recording_app.app), sqs, executor, poll_interval=3600, retry_visibility=0)
    yield url, source.start
    source.stop()
    executor.shutdown(wait=True)


def test_dup_job_delivers_a_job_a_second_time(install: Callable[..., FaultInjector],
                                              jobs_queue: tuple[str, Callable[[], None]]) -> None:
    injector = install(seed=1, dup_job=1.0)
    url, start = jobs_queue
    boto3.client("sqs").send_message(QueueUrl=url, MessageBody="once")
    start()
    deadline = time.monotonic() + 20
    while len(recording_app.sqs_batches) < 2:
        assert time.monotonic() < deadline, "the duplicate never came"
        time.sleep(0.02)
    assert [[body for body, _ in batch] for batch in recording_app.sqs_batches[:2]] == [["once"], ["once"]]
    assert injector.counts["dup_job"] == 1


# -- the invoker: a dead "Lambda" is answered as AWS answers it ---------------------------------
dying = Chalice(app_name="dying")


@dying.route("/die", methods=["GET"])
def die() -> None:
    raise LambdaDeath("the function crashed")


@dying.on_ws_message()
def die_on_frame(event: Any) -> None:
    raise LambdaDeath("the function crashed")


@dying.on_sqs_message(queue="dying-jobs", batch_size=10)
def die_on_jobs(event: Any) -> None:
    raise LambdaDeath("the function crashed")


def test_a_dead_rest_handler_answers_api_gateways_502_in_json() -> None:
    """Regression (issue 21, finding 13): the death escaped to uvicorn, which answered a
    plain-text 500; API Gateway answers 502, JSON (its DEFAULT_5XX gateway response)."""
    answer = LambdaInvoker(dying).rest("GET", "/die", {}, b"")
    assert answer.status == 502
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == {"error": {"code": "internal_error", "message": "an internal error occurred"}}


def test_a_dead_frame_handler_answers_nothing_and_a_dead_batch_stays() -> None:
    invoker = LambdaInvoker(dying)
    event = {"requestContext": {"routeKey": "$default", "connectionId": "c1", "eventType": "MESSAGE",
                                "domainName": "x", "stage": "local", "apiId": "x"}, "body": "{}"}
    assert invoker.websocket("$default", event) == 500  # nothing is sent back
    config, = invoker.sqs_handlers()
    records = [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": "{}", "Attributes": {},
                "MD5OfBody": ""} for i in range(3)]
    assert invoker.sqs(config, sqs_event("arn:aws:sqs:us-east-1:123456789012:dying-jobs", records)) == [
        "m0", "m1", "m2"]  # every job stays for its visibility timeout
