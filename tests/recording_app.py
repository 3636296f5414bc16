"""A small Chalice app that records what the local stack's gateway hands it.

It exercises the emulation (events, callback API, SQS source) independently of the product's
app.py, which the e2e tests cover through `python -m devstack`.
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import boto3
from chalice import Chalice, Response
from chalice.app import SQSEvent, WebsocketEvent

app = Chalice(app_name="recording")
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.websocket_api.session = boto3.session.Session()

events: list[tuple[str, dict[str, Any]]] = []
sqs_batches: list[list[tuple[str, float]]] = []
release_holds = threading.Event()
holds_in_progress = 0
_lock = threading.Lock()


def reset() -> None:
    global holds_in_progress
    events.clear()
    sqs_batches.clear()
    release_holds.clear()
    holds_in_progress = 0


def callback_client() -> Any:
    return boto3.client("apigatewaymanagementapi", endpoint_url=os.environ["CALLBACK_URL"],
                        region_name="us-east-1")


@app.on_ws_connect()
def connect(event: WebsocketEvent) -> Response | None:
    events.append(("connect", event.to_dict()))
    query = event.to_dict().get("queryStringParameters") or {}
    if query.get("deny") == "1":
        return Response(body="", status_code=403)
    return None


@app.on_ws_message()
def message(event: WebsocketEvent) -> None:
    events.append(("message", event.to_dict()))
    reply = json.dumps({"echo": event.body, "connection_id": event.connection_id})
    callback_client().post_to_connection(ConnectionId=event.connection_id, Data=reply.encode())


@app.on_ws_disconnect()
def disconnect(event: WebsocketEvent) -> None:
    events.append(("disconnect", event.to_dict()))


@app.route("/hold", methods=["GET"])
def hold() -> dict[str, Any]:
    """Holds its thread like a long poll does, until the test releases it."""
    global holds_in_progress
    with _lock:
        holds_in_progress += 1
    released = release_holds.wait(timeout=60)
    with _lock:
        holds_in_progress -= 1
    return {"released": released}


@app.route("/echo/{word}", methods=["POST"])
def echo(word: str) -> dict[str, Any]:
    request = app.current_request
    return {"word": word, "query": request.query_params, "body": request.json_body}


@app.on_sqs_message(queue="recording-jobs", batch_size=5)
def jobs(event: SQSEvent) -> dict[str, list[dict[str, str]]]:
    """"poison" fails the whole batch (raises); a body starting "bad" fails alone (a partial
    batch response); "hold" keeps the batch running until `release_holds` is set."""
    now = time.time()
    bodies = [(record.body, now) for record in event]
    sqs_batches.append(bodies)
    if any(body == "hold" for body, _ in bodies):
        release_holds.wait(timeout=60)  # a batch that runs until the test lets it go
    if any(body == "poison" for body, _ in bodies):
        raise RuntimeError("poison message")
    return {"batchItemFailures": [{"itemIdentifier": record.to_dict()["messageId"]}
                                  for record in event if record.body.startswith("bad")]}
