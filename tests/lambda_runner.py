"""One Lambda function's process, as the python3.13 runtime runs it: run by an isolated
interpreter (`python -I`: no PYTHONPATH, no user site, not even this file's folder on sys.path)
with the unpacked deployment package as its task root, first on sys.path as in /var/task.

    python -I tests/lambda_runner.py <task root> <handler, e.g. app.ws_message>

It imports the handler once (the cold start), prints `{"ready": true}` (or `{"initError": ...}`
and exits 1), then reads one JSON event per line on stdin and prints one JSON line per event:
`{"result": ...}` or Lambda's `{"errorType", "errorMessage"}`. Answers go to the original
stdout; the function's own prints and logs go to stderr (on Lambda both are its log stream).
Standard library only: nothing here may come from outside the package.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any, TextIO


class Context:
    """The parts of Lambda's context object the app reads."""

    def __init__(self, timeout_ms: int) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        region = os.environ.get("AWS_REGION", "")
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "2026/01/01/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _answer(out: TextIO, value: dict[str, Any]) -> None:
    out.write(json.dumps(value, default=str) + "\n")
    out.flush()


def main() -> int:
    task_root, handler_name = sys.argv[1], sys.argv[2]
    out = os.fdopen(os.dup(1), "w")  # the answers' channel
    os.dup2(2, 1)  # the function's stdout (its logs) goes where its stderr goes
    sys.stdout = sys.stderr
    sys.path.insert(0, task_root)
    module_name, _, attribute = handler_name.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:
        _answer(out, {"initError": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()})
        return 1
    _answer(out, {"ready": True, "path": sys.path})
    timeout_ms = int(os.environ.get("WEBIM_RUNNER_TIMEOUT_MS", "28000"))
    for line in sys.stdin:
        # Lambda sets a trace header per invocation (not sampled: the X-Ray SDK sends nothing)
        os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};" \
                                         f"Parent={uuid.uuid4().hex[:16]};Sampled=0"
        try:
            result = handler(json.loads(line), Context(timeout_ms))
        except Exception as error:
            traceback.print_exc()
            _answer(out, {"errorType": type(error).__name__, "errorMessage": str(error)})
            continue
        _answer(out, {"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
