"""The deployment package as `make deploy` uploads it, and a way to run its functions as Lambda
does (tests/test_lambda_package.py, tests/test_packaging.py).

- `deployment_package()`: `chalice package --stage dev` run by the deploy venv's chalice
  (infra/runtime.py: Python 3.13, the python3.13 arm64 functions), once per test process.
- `unpack()`: the zip into a task root. Its native extensions are built for arm64 (Graviton);
  on another machine (this one is x86_64) the same versions of the same distributions are
  installed over them for this machine (pip's wheel of `name==version` for cp313): every file of
  the app and of the other distributions is the zip's, byte for byte, and each exchanged
  distribution has the same files but for its extensions' platform tags (checked).
- `isolated_python()`: an empty venv of Python 3.13 (no pip, nothing installed): with `-I`, its
  sys.path is the standard library and the task root only.
- `Functions`: one runner process per function (tests/lambda_runner.py), the function's
  environment as its configuration gives it, events in, answers out.
- `CallbackApi`: the WebSocket API's @connections endpoint (CALLBACK_URL), recording each frame
  a function posts to a connection.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote

import pytest

from infra import runtime

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "lambda_runner.py"
_ARM = ("aarch64", "arm64")
T = TypeVar("T")


def _scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    import atexit  # noqa: PLC0415

    atexit.register(shutil.rmtree, path, True)
    return path


def package_env() -> dict[str, str]:
    """Fake credentials and a fixed region (chalice package talks to no AWS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBIM_"))}
    env.pop("JOBS_QUEUE_NAME", None)
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def needed(make: Callable[[], T]) -> T:
    """`make()`, or the test fails in one line when the runtime's Python is missing (a fail, not
    a skip: this suite's machines have it, docs/deploy.md "The Lambda runtime")."""
    try:
        return make()
    except runtime.RuntimeMissing as error:
        missing = str(error)
    pytest.fail(f"the Lambda runtime's interpreter is missing: {missing}", pytrace=False)  # outside: no chain


@functools.cache
def deployment_package() -> Path:
    """A folder with `deployment.zip` and `sam.json`, as the deploy's chalice builds them (the
    first run downloads the arm64 cp313 wheels; chalice keeps them in .chalice/deployments/)."""
    python = runtime.ensure_deploy_venv(ROOT)
    out = _scratch("webim-package-") / "package"
    result = subprocess.run([str(python.parent / "chalice"), "package", "--stage", "dev", str(out)],
                            cwd=ROOT, env=package_env(), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"chalice package failed:\n{result.stdout}\n{result.stderr}")
    return out


@functools.cache
def isolated_python() -> Path:
    """An empty venv of the runtime's Python (RuntimeMissing, one line, when there is none)."""
    base = runtime.find_python()
    venv = _scratch("webim-isolated-") / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def _metadata(dist_info: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in ("METADATA", "WHEEL"):
        for line in (dist_info / name).read_text().splitlines():
            key, sep, value = line.partition(": ")
            if not sep:
                if name == "METADATA":
                    break  # the headers end at the first blank line
                continue
            fields.setdefault(key, value)
    return fields


def _native_dists(task_root: Path) -> list[tuple[str, str, Path]]:
    """(name, version, dist-info) of the distributions with platform code (not purelib)."""
    found = []
    for dist_info in sorted(task_root.glob("*.dist-info")):
        meta = _metadata(dist_info)
        if meta.get("Root-Is-Purelib", "true").lower() == "false":
            found.append((meta["Name"], meta["Version"], dist_info))
    return found


def _record(dist_info: Path) -> set[str]:
    """The distribution's files, an extension's platform tag left out (`_x.cpython-313-aarch64-linux-gnu.so`
    and `_x.cpython-313-x86_64-linux-gnu.so` are one file), its dist-info's bookkeeping too."""
    files = set()
    for line in (dist_info / "RECORD").read_text().splitlines():
        name = line.split(",", 1)[0]
        if name and not name.startswith(dist_info.name + "/"):
            files.add(re.sub(r"\.cpython-\d+-[^.]+\.so$", ".so", name))
    return files


def _replace_dist(task_root: Path, dist_info: Path, wheel: Path) -> None:
    """The wheel's files instead of the distribution's; the same files but for platform tags."""
    before = _record(dist_info)
    for line in (dist_info / "RECORD").read_text().splitlines():
        path = task_root / line.split(",", 1)[0]
        if path.is_file():
            path.unlink()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(task_root)
    after = _record(dist_info)
    if after != before:
        raise RuntimeError(f"{wheel.name} is not the zip's {dist_info.name} for another machine: "
                           f"{sorted(after ^ before)[:10]}")


def native_twins(task_root: Path) -> list[str]:
    """On a machine that is not arm64: each native distribution of the task root replaced by
    the same version built for this machine. Returns the distributions replaced."""
    if platform.machine().lower() in _ARM:
        return []
    python = runtime.ensure_deploy_venv(ROOT)  # cp313 on this machine: pip picks its wheels
    wheels = _scratch("webim-wheels-")
    replaced = []
    for name, version, dist_info in _native_dists(task_root):
        subprocess.run([str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--only-binary=:all:", "--no-deps", "--dest", str(wheels / name), f"{name}=={version}"],
                       check=True, timeout=300)
        (wheel,) = (wheels / name).glob("*.whl")
        _replace_dist(task_root, dist_info, wheel)
        replaced.append(f"{name}=={version}")
    return replaced


def unpack(package: Path, dest: Path) -> list[str]:
    """deployment.zip into `dest`; returns the native distributions replaced by their twins."""
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        archive.extractall(dest)
    return native_twins(dest)


# --- the functions ---------------------------------------------------------------------------


@dataclass
class FunctionConfig:
    """One function of sam.json: its name on Lambda, handler, environment, memory, timeout."""

    name: str
    handler: str
    environment: dict[str, str]
    memory: int
    timeout: int


def function_configs(sam: dict[str, Any], stage: str = "dev") -> dict[str, FunctionConfig]:
    """Handler (`app.ws_message`) -> its function, named as chalice names it on Lambda."""
    configs = {}
    for logical, resource in sam["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        suffix = "" if props["Handler"] == "app.app" else f"-{_snake(logical)}"
        configs[props["Handler"]] = FunctionConfig(
            name=f"webim-{stage}{suffix}", handler=props["Handler"],
            environment=dict(props["Environment"]["Variables"]), memory=int(props["MemorySize"]),
            timeout=int(props["Timeout"]))
    return configs


def _snake(logical: str) -> str:
    """sam.json's logical id (WebsocketMessage) back to chalice's function name part."""
    known = {"WebsocketConnect": "websocket_connect", "WebsocketMessage": "websocket_message",
             "WebsocketDisconnect": "websocket_disconnect", "OnJob": "on_job",
             "LpWaitAuthorizer": "lp_wait_authorizer", "SweepLongPollDoorbells": "sweep_long_poll_doorbells"}
    return known.get(logical, logical)


class FunctionError(Exception):
    """The function failed to start (an import) or raised: Lambda's error, with its log."""


@dataclass
class Functions:
    """One warm process per function, as a Lambda container: imported once, then invoked."""

    python: Path
    task_root: Path
    configs: dict[str, FunctionConfig]
    aws_env: dict[str, str]
    logs: Path = field(default_factory=lambda: _scratch("webim-logs-"))
    _processes: dict[str, tuple[subprocess.Popen[str], IO[str]]] = field(default_factory=dict)

    def environment(self, config: FunctionConfig) -> dict[str, str]:
        """What Lambda puts in a function's environment: its variables and the runtime's own."""
        return {
            **config.environment, **self.aws_env,
            "AWS_LAMBDA_FUNCTION_NAME": config.name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime.RUNTIME}",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}", "LAMBDA_TASK_ROOT": str(self.task_root),
            "LANG": "en_US.UTF-8", "TZ": ":UTC", "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.logs), "WEBIM_RUNNER_TIMEOUT_MS": str(config.timeout * 1000),
        }

    def start(self, handler: str) -> subprocess.Popen[str]:
        """The function's process, started on first use (its cold start); FunctionError when
        its handler cannot be imported."""
        if handler in self._processes:
            return self._processes[handler][0]
        config = self.configs[handler]
        log = (self.logs / f"{config.name}.log").open("w")
        process = subprocess.Popen([str(self.python), "-I", str(RUNNER), str(self.task_root), handler],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                   env=self.environment(config), cwd=self.task_root)
        self._processes[handler] = (process, log)
        assert process.stdout is not None
        hello = json.loads(process.stdout.readline() or '{"initError": "the process died"}')
        if "initError" in hello:
            raise FunctionError(f"{config.name}: {hello['initError']}")
        return process

    def invoke(self, handler: str, event: dict[str, Any]) -> Any:
        process = self.start(handler)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(event) + "\n")
        process.stdin.flush()
        answer = json.loads(process.stdout.readline() or '{"errorType": "Died", "errorMessage": "no answer"}')
        if "result" not in answer:
            log = (self.logs / f"{self.configs[handler].name}.log").read_text()[-3000:]
            raise FunctionError(f"{handler}: {answer['errorType']}: {answer['errorMessage']}\n{log}")
        return answer["result"]

    def sys_path(self, handler: str) -> list[str]:
        """The function process's sys.path, as it reported it when ready."""
        process = subprocess.run([str(self.python), "-I", str(RUNNER), str(self.task_root), handler],
                                 input="", capture_output=True, text=True, env=self.environment(self.configs[handler]),
                                 timeout=120)
        return list(json.loads(process.stdout.splitlines()[0])["path"])

    def errors_logged(self) -> list[str]:
        """Lines of the functions' logs that report an error (Powertools' ERROR level, a
        traceback, the X-Ray SDK's complaints): none in a good exchange."""
        lines = []
        for path in sorted(self.logs.glob("*.log")):
            for line in path.read_text().splitlines():
                if '"level":"ERROR"' in line or "Traceback" in line or "Error" in line.split(":", 1)[0]:
                    lines.append(f"{path.stem}: {line}")
        return lines

    def stop(self) -> None:
        for process, log in self._processes.values():
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
            log.close()
        self._processes.clear()


# --- events, as API Gateway and the SQS event source send them --------------------------------


def rest_event(method: str, path: str, body: Any = None, token: str | None = None,
               query: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API proxy event for a route without path parameters."""
    headers = {"content-type": "application/json", "host": "rest.example"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return {
        "resource": path, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": method, "stage": "api", "path": f"/api{path}",
                           "requestId": secrets.token_hex(8), "requestTimeEpoch": int(time.time() * 1000),
                           "identity": {"sourceIp": "198.51.100.7", "userAgent": "test"}},
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False,
    }


# --- the WebSocket API's @connections endpoint -------------------------------------------------


class CallbackApi:
    """`POST/GET/DELETE {CALLBACK_URL}/@connections/{id}`: records what is posted to each open
    connection; a connection it was not told of, or one deleted, is gone (410), as on AWS."""

    def __init__(self) -> None:
        self.frames: dict[str, list[dict[str, Any]]] = {}
        self._changed = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _connection(self) -> str:
                return unquote(self.path.rsplit("/@connections/", 1)[-1])

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not recorder.post(self._connection(), data):
                    self._answer(410, b'{"message": "Gone"}')
                    return
                self._answer(200)

            def do_DELETE(self) -> None:  # noqa: N802
                self._answer(204 if recorder.close(self._connection()) else 410)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(200 if self._connection() in recorder.frames else 410, b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.closed: set[str] = set()

    def open(self, connection_id: str) -> None:
        with self._changed:
            self.frames[connection_id] = []

    def post(self, connection_id: str, data: bytes) -> bool:
        with self._changed:
            if connection_id not in self.frames or connection_id in self.closed:
                return False
            self.frames[connection_id].append(json.loads(data))
            self._changed.notify_all()
            return True

    def close(self, connection_id: str) -> bool:
        with self._changed:
            known = connection_id in self.frames and connection_id not in self.closed
            self.closed.add(connection_id)
            return known

    def _find(self, connection_id: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((frame for frame in self.frames.get(connection_id, []) if match(frame)), None)

    def wait_for(self, connection_id: str, match: Callable[[dict[str, Any]], bool],
                 timeout: float = 30.0, poke: Callable[[], object] | None = None) -> dict[str, Any]:
        """The first frame posted to the connection that `match`es, waiting until one is posted;
        `poke`, when given, runs between looks (e.g. a long-polled receive of the jobs queue
        handed to its function: what the SQS event source would do)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                found = self._find(connection_id, match)
                if found is None and poke is None:
                    self._changed.wait_for(lambda: self._find(connection_id, match) is not None,
                                           timeout=max(0.0, deadline - time.monotonic()))
                    found = self._find(connection_id, match)
            if found is not None:
                return found
            if time.monotonic() > deadline or poke is None:
                raise AssertionError(f"no matching frame for {connection_id}: {self.frames.get(connection_id)}")
            poke()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
