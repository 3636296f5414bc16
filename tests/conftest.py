"""Shared fixtures.

Tiers: unit (no I/O), functional (moto in-process, real boto3 code paths), local stack
(`devstack` parts served over real HTTP/WebSocket in this process, with a small test app),
and e2e (the whole local stack as `make run` starts it, in a separate process).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import httpx
import pytest
from moto import mock_aws

from devstack import moto_queries, moto_speedups, moto_transactions
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import REGION, EmbeddedAws, fake_credentials, serialize_moto_calls
from devstack.invoker import LambdaInvoker
from devstack.local_secrets import provision_secrets
from devstack.server import HANDLER_THREADS, build_asgi
from tests import recording_app, tiers
from tests.harness import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
BROWSER_TESTS = ROOT / "tests" / "browser"
_ORIGINAL_CREATE_LOADER = botocore.loaders.create_loader
_loaders: dict[str | None, botocore.loaders.Loader] = {}


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """One botocore data loader per process: every session (moto resets boto3's default one per
    test; each Services build makes its own) otherwise reads and parses the service models and
    endpoint rules again, 0.3-0.8 s a test. The loader holds read-only model data only."""
    loader = _loaders.get(search_path_string)
    if loader is None:
        loader = _loaders[search_path_string] = _ORIGINAL_CREATE_LOADER(search_path_string)
    return loader


botocore.session.create_loader = _shared_loader  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROWSER_TESTS in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    tiers.entering(item)  # session fixtures start in the setup of their first test
    try:
        return (yield)
    finally:
        tiers.entering(None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    tiers.entering(item)
    try:
        return (yield)
    finally:
        tiers.entering(None)


@pytest.fixture
def aws() -> Iterator[None]:
    """A fresh, empty moto account for one test."""
    saved = dict(os.environ)
    fake_credentials()
    serialize_moto_calls()
    moto_transactions.install()  # as the local stack runs moto: flat transactions, no instance registry
    moto_speedups.install()  # and its same answers for less CPU (tests/test_moto_speedups.py holds them to moto's)
    moto_queries.install()  # base-table Queries read their partition (tests/test_moto_queries.py)
    with mock_aws():
        yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def provisioned(aws: None, tmp_path: Path) -> dict[str, str]:
    """The infra/ stack and the secrets created in moto, as the local stack does; returns the
    environment variables the app would get."""
    return {**EmbeddedAws(stage="test").provision(), **provision_secrets("test", tmp_path)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalStackProcess:
    """`python -m devstack` on a free port, as `make run` starts it."""

    def __init__(self, port: int, local_dir: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        tiers.require_marker("e2e", "a subprocess stack (python -m devstack)")
        self.port = port
        self.local_dir = local_dir
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.log_path = ROOT / ".pytest_cache" / f"devstack-{port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self._log = self.log_path.open("w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONUNBUFFERED"] = "1"
        if local_dir is not None:
            env["WEBIM_LOCAL_DIR"] = str(local_dir)
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "--port", str(port)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def dev_login(self, name: str) -> str:
        response = httpx.post(f"{self.base_url}/api/identity/dev-login", json={"name": name})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def ws_url_as(self, name: str) -> str:
        return f"{self.ws_url}?token={self.dev_login(name)}"

    def wait_ready(self, timeout: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"local stack exited early:\n{self.output()}")
            if "ready at" in self.output():
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"local stack not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    # a 1 s ack timeout and presence grace, so retransmission and "offline" show within seconds
    stack = LocalStackProcess(free_port(), local_dir=tmp_path_factory.mktemp("local"),
                              extra_env={"ACK_TIMEOUT_SECONDS": "1", "PRESENCE_GRACE_SECONDS": "1"})
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def gateway(aws: None) -> Iterator[str]:
    yield from serve_recording_app(idle_timeout=600)


def serve_recording_app(idle_timeout: float) -> Iterator[str]:
    recording_app.reset()
    port = free_port()
    os.environ["CALLBACK_URL"] = f"http://127.0.0.1:{port}"
    executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
    asgi = build_asgi(LambdaInvoker(recording_app.app), ConnectionRegistry(), executor, frontend=None,
                      idle_timeout=idle_timeout)
    with serve_in_thread(asgi, port) as host:
        yield host
    recording_app.release_holds.set()
    executor.shutdown(wait=True)


def table(name: str) -> Any:
    return boto3.resource("dynamodb", region_name=REGION).Table(name)
