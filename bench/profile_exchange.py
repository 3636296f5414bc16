"""Profile: where the CPU time of one exchange goes on the local stack.

    .venv/bin/python -m bench.profile_exchange --messages 100

Runs the local stack in this process (devstack's `LocalStack`, uvicorn in a thread), has one
pair exchange messages over real WebSockets with the Python client (in the main thread), and
samples every thread meanwhile: every `--interval-ms` the CPU time each thread used since the
last sample (its own CPU clock, so waiting on a lock, a socket or the GIL counts nothing) is
charged to the stack that thread is in at that moment. Stacks are sorted into buckets by the
innermost frame that is not the standard library (json and logging are buckets of their own):
moto per AWS operation, botocore's own work, the app (chalicelib, app.py), devstack and the
web servers, the client. A sampling profiler, so the table is an estimate (a few percent), but
unlike cProfile it does not inflate code that makes many small calls. The client's CPU is shown
apart: it is not the stack's.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx

from bench.report import machine, update_section

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]
SITE = ("site-packages", "dist-packages")

ATTEMPTS = 4
# botocore/boto3 module -> what it does
BOTOCORE_PARTS = {
    "serialize": "serialize request", "validate": "validate parameters", "parsers": "parse response",
    "auth": "sign (SigV4)", "signers": "sign (SigV4)", "hooks": "event hooks", "handlers": "event hooks",
    "endpoint": "send (endpoint)", "httpsession": "send (endpoint)", "awsrequest": "send (endpoint)",
    "regions": "endpoint resolution", "endpoint_provider": "endpoint resolution",
    "credentials": "credentials", "model": "service model", "client": "client call", "retries": "retries",
    "retryhandler": "retries", "utils": "utils", "context": "context", "useragent": "user agent",
}


# Innermost functions where a thread waits with the GIL released (found in earlier runs of this
# profile: the CPU charged there was spent just before, elsewhere).
PARK_POINTS = {
    "project/devstack/embedded_aws:_serialized_process_request",  # the moto lock
    "project/devstack/callback_api:answer",  # waits for the event loop to send the frame
    "project/devstack/sqs_source:_sleep_until_due",
    "botocore/endpoint:_update_retries_context",  # uuid4: os.urandom
    "stdlib",  # a thread pool worker waiting for work, a Condition
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _where(frame: FrameType) -> tuple[str, str]:
    """(package, module) of a frame: ("stdlib", "json"), ("botocore", "auth"), ("project", "devstack/x")."""
    path = frame.f_code.co_filename
    for marker in SITE:
        index = path.find(f"/{marker}/")
        if index >= 0:
            rest = path[index + len(marker) + 2:].split("/")
            return rest[0].removesuffix(".py"), "/".join(rest[1:]).removesuffix(".py")
    if path.startswith(str(ROOT)):
        return "project", path[len(str(ROOT)) + 1:].removesuffix(".py")
    if path.startswith(STDLIB) or path.startswith("<"):
        return "stdlib", path[len(STDLIB) + 1:].split("/")[0].removesuffix(".py")
    return "other", path


def _operation(frames: list[FrameType]) -> str:
    """The AWS operation a moto stack serves: its `{service}/responses.py` method, e.g.
    dynamodb.transact_write_items. (Only code objects are read: a frame's locals, read from
    another thread, crash CPython 3.11.)"""
    found = "?"
    for frame in reversed(frames):  # outermost first
        package, module = _where(frame)
        if package == "moto" and module.endswith("/responses") and not module.startswith("core/"):
            name = frame.f_code.co_name
            if name not in ("call_action", "dispatch") and not name.startswith("_"):
                return f"{module.split('/')[0]}.{''.join(w.title() for w in name.split('_'))}"
            found = module.split("/")[0] + " (parse the request, serialise the answer)"
    return found if found != "?" else "(routing a request: URL match, werkzeug request)"


# Third-party packages whose frames are always one part
PACKAGE_PARTS = {
    "urllib3": ("devstack", "callback API: HTTP client (urllib3)"),
    "certifi": ("devstack", "callback API: HTTP client (urllib3)"),
    "h11": ("devstack", "HTTP server (uvicorn/h11)"),
    "httptools": ("devstack", "HTTP server (uvicorn/h11)"),
    "websockets": ("devstack", "WebSocket protocol (websockets)"),
    "starlette": ("devstack", "ASGI routing (starlette)"),
    "anyio": ("devstack", "ASGI routing (starlette)"),
    "chalice": ("devstack", "chalice dispatch"),
    "aws_xray_sdk": ("tracing", "aws_xray_sdk"),
    "aws_lambda_powertools": ("tracing", "aws_lambda_powertools"),
    "werkzeug": ("moto", "(routing a request: URL match, werkzeug request)"),
}
HELPERS = {"jmespath", "dateutil", "six"}  # count for whoever called them


def _project_part(module: str, frames: list[FrameType]) -> tuple[str, str]:
    if module.startswith("chalicelib/") or module == "app":
        return "app", module
    if module == "devstack/callback_api":
        signing = any(f.f_code.co_name == "signed_by" for f in frames)
        return "devstack", "callback API: SigV4 check" if signing else "callback API: handler"
    if module in ("devstack/moto_speedups", "devstack/moto_transactions"):
        return "moto", _operation(frames)  # moto's own work, patched
    if module.startswith("devstack/"):
        return "devstack", module.removeprefix("devstack/")
    if module.startswith(("webim_client/", "bench/")):
        return "client", module
    return "other", module


def _library_part(package: str, module: str, frames: list[FrameType]) -> tuple[str, str]:
    if package == "moto":
        return "moto", _operation(frames)
    if package == "boto3":
        return "botocore", "boto3 resource layer (" + module.split("/", maxsplit=1)[0] + ")"
    if package == "botocore":
        part = BOTOCORE_PARTS.get(module, module)
        if part == "send (endpoint)" and any(_where(f)[0] == "moto" for f in frames):
            part = "moto stubber glue"
        return "botocore", part
    if package == "uvicorn":
        if "websockets" in module:
            return "devstack", "WebSocket server (uvicorn)"
        return "devstack", "HTTP server (uvicorn/h11)" if "protocols/http" in module else "event loop (asyncio)"
    return PACKAGE_PARTS.get(package, ("other", package))


def classify(frame: FrameType | None) -> tuple[str, str]:
    """(bucket, detail) for a stack whose innermost frame is `frame`."""
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)  # innermost first
        frame = frame.f_back
    for index, current in enumerate(frames):
        package, module = _where(current)
        if package == "stdlib" and module == "json":
            owner = next((classify_owner(f) for f in frames[index:] if _where(f)[0] != "stdlib"), "?")
            return "JSON", f"json for {owner}"
        if package == "stdlib" and module == "logging":
            return "logging", "logging"
        if package == "stdlib" or package in HELPERS:
            continue
        if package == "project":
            return _project_part(module, frames[index:])
        return _library_part(package, module, frames)
    return _thread_machinery(frames)


def _thread_machinery(frames: list[FrameType]) -> tuple[str, str]:
    """A stack of standard library frames only."""
    names = {_where(f)[1] for f in frames}
    if "asyncio" in names or "selectors" in names:
        return "devstack", "event loop (asyncio)"
    if "concurrent" in names or "threading" in names:
        return "devstack", "thread pool / threads"
    return "other", "stdlib"


def innermost(frame: FrameType | None) -> str:
    """The innermost function that is not the standard library's, as module:function."""
    while frame is not None:
        package, module = _where(frame)
        if package != "stdlib":
            return f"{package}/{module}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "stdlib"


def classify_owner(frame: FrameType) -> str:
    package, module = _where(frame)
    if package == "project":
        return module.split("/")[0]
    return package


class Sampler:
    """Charges each thread's CPU time since the last sample to that thread's current stack."""

    def __init__(self, interval: float, client_thread: int) -> None:
        self.interval = interval
        self.client_thread = client_thread
        self.cpu: Counter[tuple[str, str]] = Counter()  # (bucket, detail) -> CPU ns
        self.functions: Counter[tuple[str, str]] = Counter()  # (bucket, innermost non-stdlib function) -> ns
        self._keys: dict[int, tuple[tuple[str, str], str]] = {}  # where each thread last ran
        self.samples = 0
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _cpu_ns(self, ident: int) -> int | None:
        try:
            return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except OSError:
            return None  # the thread ended

    def _sample(self) -> None:
        frames = sys._current_frames()
        me = threading.get_ident()
        for ident, frame in frames.items():
            if ident == me:
                continue
            now = self._cpu_ns(ident)
            if now is None:
                continue
            before = self._last.get(ident)
            self._last[ident] = now
            if before is None or now <= before:
                continue
            if ident == self.client_thread:
                key, function = ("client", "client and bench driver"), "client"
            else:
                try:
                    key, function = classify(frame), innermost(frame)
                except Exception:  # a frame torn down under us
                    key, function = ("other", "unclassified"), "?"
            # The CPU used since the last sample goes to the stack the thread is in now, unless
            # it stands at a call that gives up the GIL to wait (a lock, a future, a random
            # number): it did not run there, so the time goes to where it was last seen running.
            if function in PARK_POINTS:
                key, function = self._keys.get(ident, (key, function))
            else:
                self._keys[ident] = (key, function)
            self.cpu[key] += now - before
            self.functions[(key[0], function)] += now - before
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def start(self) -> None:
        for ident in sys._current_frames():
            now = self._cpu_ns(ident)
            if now is not None:
                self._last[ident] = now
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@contextmanager
def local_stack() -> Iterator[str]:
    """The local stack of `make run`, in this process; yields its base URL."""
    # after the environment is set, as the stack does
    from devstack.server import LocalStack  # noqa: PLC0415
    from tests.harness import serve_in_thread  # noqa: PLC0415

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    port = free_port()
    stack = LocalStack(port=port)
    try:
        with serve_in_thread(stack.start(), port) as address:
            yield address
    finally:
        stack.stop()


async def exchange(host: str, messages: int, warmup: int, interval: float) -> tuple[Sampler, float, int]:
    from webim_client import Client, WebSocketTransport  # noqa: PLC0415

    def url(name: str) -> str:
        token = httpx.post(f"http://{host}/api/identity/dev-login", json={"name": name}).json()["token"]
        return f"ws://{host}/ws?token={token}"

    alice = Client(WebSocketTransport(url("profile-a")), ack_timeout=10)
    bob = Client(WebSocketTransport(url("profile-b")), ack_timeout=10)
    await alice.start(pull=False)
    await bob.start(pull=False)

    async def one(i: int) -> None:
        sent = await alice.send(f"message {i}", to={"kind": "user", "id": "profile-b"})
        await asyncio.wait_for(bob.inbox.get(), 30)
        await asyncio.wait_for(sent.delivered, 30)

    try:
        for i in range(warmup):  # a warm container: services built, connections cached
            await one(i)
        sampler = Sampler(interval, threading.get_ident())
        sampler.start()
        started = time.perf_counter()
        for i in range(messages):
            await one(warmup + i)
        wall = time.perf_counter() - started
        # the last messages' ack-timeout checks (call 12) run after the ack timeout
        await asyncio.sleep(float(os.environ["ACK_TIMEOUT_SECONDS"]) + 1.5)
        sampler.stop()
    finally:
        await alice.close()
        await bob.close()
    return sampler, wall, messages


def table(sampler: Sampler, wall: float, messages: int) -> str:
    stack_ns = sum(ns for (bucket, _), ns in sampler.cpu.items() if bucket != "client")
    client_ns = sum(ns for (bucket, _), ns in sampler.cpu.items() if bucket == "client")
    by_bucket: Counter[str] = Counter()
    for (bucket, _), ns in sampler.cpu.items():
        if bucket != "client":
            by_bucket[bucket] += ns

    def ms(ns: float) -> str:
        return f"{ns / 1e6 / messages:.2f}"

    def share(ns: float) -> str:
        return f"{100 * ns / stack_ns:.1f} %"

    names = {"moto": "moto (per AWS operation)", "botocore": "botocore / boto3 (client side of every call)",
             "app": "the app's own logic (chalicelib, app.py)", "devstack": "devstack (servers, gateway, callback API, "
             "invoker, threads)", "JSON": "JSON (stdlib json, by caller)", "logging": "logging",
             "tracing": "X-Ray / Powertools", "other": "other"}
    lines = [
        "| bucket / part | CPU ms per exchange | share of the stack's CPU |",
        "|---|---|---|",
    ]
    for bucket, ns in by_bucket.most_common():
        lines.append(f"| **{names.get(bucket, bucket)}** | **{ms(ns)}** | **{share(ns)}** |")
        parts = Counter({detail: n for (b, detail), n in sampler.cpu.items() if b == bucket})
        shown = 0.0
        for detail, n in parts.most_common():
            if n / stack_ns < 0.004:
                break
            lines.append(f"| &nbsp;&nbsp;{detail} | {ms(n)} | {share(n)} |")
            shown += n
        if ns - shown > 0 and len(parts) > 1:
            lines.append(f"| &nbsp;&nbsp;(the rest of {bucket}) | {ms(ns - shown)} | {share(ns - shown)} |")
    lines.append(f"| **the stack, in all** | **{ms(stack_ns)}** | 100 % |")
    lines.append(f"| (the client and bench driver, not the stack) | {ms(client_ns)} | |")
    summary = (f"{messages} exchanges one after another in {wall:.2f} s ({messages / wall:.1f} /s, "
               f"{1000 * wall / messages:.1f} ms each, while sampled); {sampler.samples} samples")
    return summary + "\n\n" + "\n".join(lines)


def profile(args: argparse.Namespace) -> str:
    """One sampled run in this process; returns the section's text."""
    # Short enough that every check (call 12) runs within the run; acks arrive in milliseconds.
    os.environ.setdefault("ACK_TIMEOUT_SECONDS", "2")
    # Shorter GIL slices so the sampler's turns come close to its interval.
    sys.setswitchinterval(0.0005)
    with local_stack() as host:
        sampler, wall, messages = asyncio.run(exchange(host, args.messages, args.warmup, args.interval_ms / 1000))
    body = "\n".join([
        f"`.venv/bin/python -m bench.profile_exchange --messages {args.messages}` (one pair, the local stack "
        f"in-process, CPU time per thread sampled every {args.interval_ms:g} ms and charged to the stack the "
        f"thread is in; ack timeout {os.environ['ACK_TIMEOUT_SECONDS']} s so every retransmit check runs within "
        f"the run; {machine()})",
        "",
        table(sampler, wall, messages),
    ])
    if args.functions:
        total = sum(sampler.cpu.values())
        body += "\n\n" + "\n".join(f"    {100 * ns / total:5.1f} %  {bucket:9} {function}"
                                   for (bucket, function), ns in sampler.functions.most_common(args.functions))
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--functions", type=int, default=0, help="also print the top N innermost functions")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # write the section to this file and exit
    args = parser.parse_args()
    if args.child:
        Path(args.child).write_text(profile(args))
        return
    # CPython 3.11 now and then crashes walking another thread's frames (the sampler's one
    # risky step): each run is a child process, run again if it died of that.
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "section.md"
        for _ in range(ATTEMPTS):
            child = subprocess.run([sys.executable, "-m", "bench.profile_exchange", *sys.argv[1:], "--child", str(out)],
                                   cwd=ROOT, check=False)
            if child.returncode != -signal.SIGSEGV:
                break
        if child.returncode != 0:
            raise SystemExit(f"the profiled run failed ({child.returncode})")
        body = out.read_text()
    print(body)
    if not args.no_write:
        update_section("profile", body)


if __name__ == "__main__":
    main()
