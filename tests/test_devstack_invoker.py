"""The local stack runs REST handlers in parallel threads: each must see its own request."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalice import Chalice

from devstack.invoker import LambdaInvoker

app = Chalice(app_name="concurrent")
both_inside = threading.Barrier(2)


@app.route("/echo", methods=["POST"])
def echo() -> dict[str, Any]:
    request = app.current_request
    assert request is not None
    before = request.json_body["n"]
    both_inside.wait(timeout=30)  # the other request is inside its handler now
    after = app.current_request
    assert after is not None
    return {"before": before, "after": after.json_body["n"]}


def test_concurrent_rest_requests_each_see_their_own_request() -> None:
    """Regression: chalice keeps one `current_request` per app, so under the local stack's
    thread pool a handler read the body (and Authorization) of a request that arrived after it
    (seen as a presence pull answered invalid_field: it had read a long poll's body)."""
    invoker = LambdaInvoker(app)

    def call(n: int) -> Any:
        answer = invoker.rest("POST", "/echo", {"content-type": "application/json"}, json.dumps({"n": n}).encode())
        return json.loads(answer.body)

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(call, [1, 2])) == [{"before": 1, "after": 1}, {"before": 2, "after": 2}]
