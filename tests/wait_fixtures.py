"""The app served in this process behind the local gateway and the wait API (as `make run`
serves it), with every function invocation counted: what runs while long-poll clients wait."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from chalicelib.wiring import install_services
from devstack.connections import ConnectionRegistry
from devstack.invoker import LambdaInvoker, RestResponse
from devstack.server import HANDLER_THREADS, STAGE, build_asgi, load_app
from devstack.wait_api import local_wait_url
from tests.conftest import free_port
from tests.harness import serve_in_thread


class CountingInvoker(LambdaInvoker):
    """Every function invocation, by function: what ran while a client waited."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    def rest(self, method: str, path: str, headers: dict[str, str], body: bytes,
             source_ip: str | None = None) -> RestResponse:
        self.calls["rest " + path.split("?", maxsplit=1)[0]] += 1
        return super().rest(method, path, headers, body, source_ip)

    def function(self, name: str, event: dict[str, Any]) -> Any:
        self.calls[name] += 1
        return super().function(name, event)


@pytest.fixture
def stack(provisioned: dict[str, str]) -> Iterator[tuple[str, CountingInvoker]]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    os.environ.update({**provisioned, "CALLBACK_URL": origin, "WEBIM_LOCAL": "1", "WEBIM_DEV_LOGIN": "1",
                       "LONG_POLL_WAIT_URL": local_wait_url(origin), "ACK_TIMEOUT_SECONDS": "1"})
    install_services(None)
    invoker = CountingInvoker(load_app(), stage=STAGE)
    executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
    try:
        with serve_in_thread(build_asgi(invoker, ConnectionRegistry(), executor, frontend=None), port) as host:
            yield f"http://{host}", invoker
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        install_services(None)


def login(base: str, name: str) -> str:
    return str(httpx.post(base + "/api/identity/dev-login", json={"name": name}).json()["token"])
