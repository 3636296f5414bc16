"""The operator's command line over the operator REST API (docs/operator.md); the same calls the
operator page (frontend/operator.html) makes.

    python -m webim_client.operator --api URL --token T reports [--status open|closed] [--limit N] [--before CURSOR]
    python -m webim_client.operator --api URL --token T report REPORT_ID
    python -m webim_client.operator --api URL --token T close REPORT_ID [--status closed|open]
    python -m webim_client.operator --api URL --token T ban user|visitor ID [--reason TEXT]
    python -m webim_client.operator --api URL --token T unban user|visitor ID
    python -m webim_client.operator --api URL --token T banned user|visitor ID
    python -m webim_client.operator --api URL --token T delete CONVERSATION_ID SEQ
    python -m webim_client.operator --api URL --token T export user|visitor ID   (every page, one JSON)
    python -m webim_client.operator --api URL --token T erase user|visitor ID    (step after step until done)

`--api` is the REST base (the local stack: http://127.0.0.1:8000/api); `--token` (or the
WEBIM_OPERATOR_TOKEN environment variable) a host-site token with the operator claim (locally:
`POST /api/identity/dev-login {"name": ..., "operator": true}`). Prints the JSON answer; an
error answer is printed to stderr with exit status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import quote

import httpx


class OperatorApi:
    """The operator routes, one method each (answers are the JSON bodies)."""

    def __init__(self, api: str, token: str, http: httpx.Client | None = None) -> None:
        self._api = api.rstrip("/")
        self._http = http or httpx.Client(timeout=30)
        self._headers = {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._http.request(method, self._api + path, headers=self._headers, json=body,
                                      params={k: v for k, v in (params or {}).items() if v is not None})
        answer: dict[str, Any] = response.json()
        if response.status_code >= 400:
            raise OperatorError(response.status_code, answer)
        return answer

    def reports(self, status: str = "open", limit: int | None = None, before: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/operator/reports", params={"status": status, "limit": limit, "before": before})

    def report(self, report_id: str) -> dict[str, Any]:
        return self._call("GET", f"/operator/reports/{quote(report_id, safe='')}")

    def set_status(self, report_id: str, status: str = "closed") -> dict[str, Any]:
        return self._call("POST", f"/operator/reports/{quote(report_id, safe='')}/status", {"status": status})

    def ban(self, kind: str, identity_id: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/operator/ban", {"identity": {"kind": kind, "id": identity_id}, "reason": reason})

    def unban(self, kind: str, identity_id: str) -> dict[str, Any]:
        return self._call("POST", "/operator/unban", {"identity": {"kind": kind, "id": identity_id}})

    def banned(self, kind: str, identity_id: str) -> dict[str, Any]:
        return self._call("GET", f"/operator/bans/{quote(kind, safe='')}/{quote(identity_id, safe='')}")

    def delete(self, conversation_id: str, seq: int) -> dict[str, Any]:
        return self._call("POST", "/operator/delete", {"conversation_id": conversation_id, "seq": seq})

    def export(self, kind: str, identity_id: str, cursor: str | None = None) -> dict[str, Any]:
        """One page of the export (the first without `cursor`); `next` continues it."""
        body: dict[str, Any] = {"identity": {"kind": kind, "id": identity_id}}
        if cursor is not None:
            body["cursor"] = cursor
        return self._call("POST", "/operator/export", body)

    def export_all(self, kind: str, identity_id: str) -> dict[str, Any]:
        """The whole export: the first page with every later page's messages added."""
        whole = self.export(kind, identity_id)
        cursor = whole.pop("next")
        while cursor is not None:
            page = self.export(kind, identity_id, cursor)
            whole["messages"] += page["messages"]
            cursor = page["next"]
        return whole

    def erase(self, kind: str, identity_id: str) -> dict[str, Any]:
        """One bounded step of the erasure; its progress (`done` when finished)."""
        return self._call("POST", "/operator/erase", {"identity": {"kind": kind, "id": identity_id}})

    def erase_all(self, kind: str, identity_id: str) -> dict[str, Any]:
        """Steps until done (a step that fails is raised: run the command again to resume)."""
        while not (progress := self.erase(kind, identity_id))["done"]:
            pass
        return progress


class OperatorError(Exception):
    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        error = answer.get("error") or {}
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.code = error.get("code")
        self.answer = answer


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m webim_client.operator", description=__doc__.split("\n\n")[0])
    top.add_argument("--api", required=True, help="the REST base, e.g. http://127.0.0.1:8000/api")
    top.add_argument("--token", default=os.environ.get("WEBIM_OPERATOR_TOKEN"),
                     help="a token with the operator claim (default: $WEBIM_OPERATOR_TOKEN)")
    commands = top.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("reports", help="a page of reports, newest first")
    listing.add_argument("--status", default="open", choices=["open", "closed"])
    listing.add_argument("--limit", type=int)
    listing.add_argument("--before", help="the previous page's `next`")
    commands.add_parser("report", help="one report with its copied messages").add_argument("report_id")
    close = commands.add_parser("close", help="set a report's status (closed by default)")
    close.add_argument("report_id")
    close.add_argument("--status", default="closed", choices=["open", "closed"])
    for name, text in (("ban", "ban an identity: tokens refused, connections closed"),
                       ("unban", "lift a ban"), ("banned", "whether an identity is banned"),
                       ("export", "everything stored about an identity, as JSON"),
                       ("erase", "erase an identity (resumable: run again after a failure)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("kind", choices=["user", "visitor"])
        command.add_argument("id")
        if name == "ban":
            command.add_argument("--reason", default="")
    delete = commands.add_parser("delete", help="delete any message for everyone")
    delete.add_argument("conversation_id")
    delete.add_argument("seq", type=int)
    return top


def run(args: argparse.Namespace, api: OperatorApi) -> dict[str, Any]:
    commands: dict[str, Callable[[], dict[str, Any]]] = {
        "reports": lambda: api.reports(args.status, args.limit, args.before),
        "report": lambda: api.report(args.report_id),
        "close": lambda: api.set_status(args.report_id, args.status),
        "ban": lambda: api.ban(args.kind, args.id, args.reason),
        "unban": lambda: api.unban(args.kind, args.id),
        "banned": lambda: api.banned(args.kind, args.id),
        "delete": lambda: api.delete(args.conversation_id, args.seq),
        "export": lambda: api.export_all(args.kind, args.id),
        "erase": lambda: api.erase_all(args.kind, args.id),
    }
    return commands[args.command]()


def main(argv: Sequence[str] | None = None, http: httpx.Client | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    if not args.token:
        print("a token is required: --token or WEBIM_OPERATOR_TOKEN", file=err)
        return 2
    try:
        with contextlib.ExitStack() as owned:
            client = http or owned.enter_context(httpx.Client(timeout=30))
            answer = run(args, OperatorApi(args.api, args.token, client))
    except OperatorError as error:
        print(json.dumps(error.answer, ensure_ascii=False), file=err)
        return 1
    print(json.dumps(answer, indent=2, ensure_ascii=False), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
