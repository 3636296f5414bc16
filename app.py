"""Access layer: API Gateway WebSocket and REST handlers and the SQS handler.

Each handler parses its event, establishes who is calling and hands over to one service
call in chalicelib; nothing else happens here.
"""
from __future__ import annotations

import logging

import boto3
from chalice.app import Chalice, SQSEvent, WebsocketEvent

from chalicelib.errors import WebimError
from chalicelib.settings import ack_timeout_queue_name
from chalicelib.tracing import configure_tracing
from chalicelib.wiring import services

app = Chalice(app_name="webim")
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.websocket_api.session = boto3.session.Session()
app.log.setLevel(logging.INFO)
configure_tracing()


@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> None:
    svc = services()
    svc.sessions.open(event.connection_id, svc.callback_endpoint(event.domain_name, event.stage))


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> None:
    try:
        services().sessions.receive(event.connection_id, event.body)
    except WebimError as error:
        app.log.warning("frame refused: %s", error.code)


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> None:
    services().sessions.close(event.connection_id)


@app.route("/health", methods=["GET"])
def health() -> dict[str, object]:
    return {"ok": True}


@app.on_sqs_message(queue=ack_timeout_queue_name(), batch_size=10)
def on_ack_timeout(event: SQSEvent) -> None:
    runner = services().jobs
    for record in event:
        runner.run(record.body)
