"""A deliberately naive chat on the same moto: a yardstick for bench/throughput.py, nothing more.

    .venv/bin/python -m bench.naive_chat --port 8100     # ws://127.0.0.1:8100/ws?user=alice

No acks, no idempotency, no ordering guarantee, no auth: a client sends {"to": "bob", "text": ...}
and bob's sockets get {"from": "alice", "text": ...}. Built like the local stack where it costs
time: moto in-process (devstack.embedded_aws: same lock, same flat-moto patches), boto3 calls from a
handler thread, and the push as a real `PostToConnection` over HTTP to its own callback endpoint.
7 AWS calls per one-way message:
    1 GetItem    the sender's connection (is it registered?)
    2 GetItem    the conversation (its last seq; read-then-write, no condition)
    3 PutItem    the message
    4 UpdateItem the conversation (last seq, preview)
    5 PutItem    the receiver's unread marker
    6 Query      the receiver's connections
    7 PostToConnection to each (one here)
plus one PutItem per connection on connect.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.exchange import ROOT, free_port
from devstack.embedded_aws import REGION, EmbeddedAws
from devstack.server import HANDLER_THREADS, uvicorn_config

CONNECTIONS, MESSAGES = "naive-connections", "naive-messages"


def create_tables() -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for name in (CONNECTIONS, MESSAGES):
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                    {"AttributeName": "sk", "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                         {"AttributeName": "sk", "KeyType": "RANGE"}])


class NaiveChat:
    """The naive chat's handlers: a socket per connection, one handler thread pool."""

    def __init__(self, port: int) -> None:
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.callback = boto3.client("apigatewaymanagementapi", region_name=REGION,
                                     endpoint_url=f"http://127.0.0.1:{port}")
        self.sockets: dict[str, WebSocket] = {}
        self.executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)  # as the local stack's handler pool

    def on_message(self, user: str, connection_id: str, frame: dict[str, Any]) -> None:
        try:
            self.handle(user, connection_id, frame)
        except Exception:  # noqa: BLE001 - a benchmark server: say it, keep serving
            traceback.print_exc()

    def handle(self, user: str, connection_id: str, frame: dict[str, Any]) -> None:
        """Runs in a handler thread, as a Lambda would."""
        dynamodb = self.dynamodb
        to, text = str(frame["to"]), str(frame["text"])
        if "Item" not in dynamodb.get_item(TableName=CONNECTIONS, Key={"pk": {"S": user}, "sk": {"S": connection_id}}):
            return
        conversation = "#".join(sorted([user, to]))
        head = dynamodb.get_item(TableName=MESSAGES, Key={"pk": {"S": conversation}, "sk": {"S": "#"}})
        seq = int(head.get("Item", {}).get("last", {"N": "0"})["N"]) + 1
        dynamodb.put_item(TableName=MESSAGES, Item={"pk": {"S": conversation}, "sk": {"S": f"{seq:012d}"},
                                                    "from": {"S": user}, "text": {"S": text}})
        dynamodb.update_item(TableName=MESSAGES, Key={"pk": {"S": conversation}, "sk": {"S": "#"}},
                             UpdateExpression="SET #l = :s, preview = :t",
                             ExpressionAttributeNames={"#l": "last"},
                             ExpressionAttributeValues={":s": {"N": str(seq)}, ":t": {"S": text[:50]}})
        dynamodb.put_item(TableName=MESSAGES, Item={"pk": {"S": f"U#{to}"}, "sk": {"S": conversation},
                                                    "unread_from": {"N": str(seq)}})
        receivers = dynamodb.query(TableName=CONNECTIONS, KeyConditionExpression="pk = :u",
                                   ExpressionAttributeValues={":u": {"S": to}})["Items"]
        data = json.dumps({"from": user, "seq": seq, "text": text}).encode()
        for item in receivers:
            self.callback.post_to_connection(ConnectionId=item["sk"]["S"], Data=data)

    async def ws(self, websocket: WebSocket) -> None:
        user, connection_id = websocket.query_params["user"], uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, lambda: self.dynamodb.put_item(
            TableName=CONNECTIONS, Item={"pk": {"S": user}, "sk": {"S": connection_id}}))
        await websocket.accept()
        self.sockets[connection_id] = websocket
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                loop.run_in_executor(self.executor, self.on_message, user, connection_id, frame)
        except WebSocketDisconnect:
            pass
        finally:
            self.sockets.pop(connection_id, None)

    async def post(self, request: Request) -> Response:
        websocket = self.sockets.get(request.path_params["connection_id"])
        if websocket is None:
            return Response(status_code=410)
        await websocket.send_text((await request.body()).decode())
        return Response(status_code=200)


def build(port: int) -> Starlette:
    chat = NaiveChat(port)
    return Starlette(routes=[WebSocketRoute("/ws", chat.ws),
                             Route("/@connections/{connection_id}", chat.post, methods=["POST"])])


class NaiveServer:
    """`python -m bench.naive_chat` as a subprocess on a free port, as bench/exchange.py's Stack."""

    def __init__(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "bench.naive_chat", "--port", str(self.port)],
                                        cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "ready at" not in Path(self.log.name).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the naive chat did not start:\n" + Path(self.log.name).read_text())
            time.sleep(0.1)

    def ws_url(self, user: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?user={user}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        errors = Path(self.log.name).read_text()
        self.log.close()
        if "Traceback" in errors:
            raise RuntimeError("the naive chat failed:\n" + errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    EmbeddedAws().start()
    os.environ["AWS_DEFAULT_REGION"] = REGION
    create_tables()
    _Server(uvicorn_config(build(args.port), "127.0.0.1", args.port, log_level="warning", access_log=False)).run()


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(f"naive chat ready at ws://127.0.0.1:{self.config.port}/ws", flush=True)


if __name__ == "__main__":
    main()
