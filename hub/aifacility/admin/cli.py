"""`aifacility admin ...`: the facility's quota policies from a terminal, through the admin service's REST API
with an administrator's JupyterHub token (the same checks as the web pages; nothing bypasses them).

    aifacility admin show [--json]
    aifacility admin show group NAME | user NAME [--json]
    aifacility admin set group NAME [--servers N] [--accelerator NAME=N ...] [--queue-accelerator NAME=N ...]
                                    [--queue-cpu Q] [--queue-memory Q] [--borrowing yes|no]
    aifacility admin set user NAME [--servers N] [--accelerator NAME=N ...]
    aifacility admin reset group NAME | user NAME      (the facility file's values again)
    aifacility admin audit [--limit N] [--json]
    aifacility admin event create FILE | list | show NAME | codes NAME N | cancel NAME   (organisers too)

The hub's address: --hub or $AIFACILITY_HUB_URL (e.g. https://facility.example.org); the token: --token or
$JUPYTERHUB_API_TOKEN. `set` replaces the whole policy of that group or user: what it leaves out is the file's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from aifacility.admin.event_cli import add_event_parser, run_event


class AdminError(RuntimeError):
    """The service refused or could not be reached; the message says why."""


class AdminClient:
    def __init__(self, hub_url: str | None = None, token: str | None = None, timeout: float = 60) -> None:
        hub = (hub_url or os.environ.get("AIFACILITY_HUB_URL") or "").rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN") or ""
        if not hub or not self.token:
            raise AdminError("Say where the hub is and who you are: --hub URL (or $AIFACILITY_HUB_URL) and --token "
                             "(or $JUPYTERHUB_API_TOKEN, an administrator's token from /hub/token).")
        self.api = f"{hub}/services/admin/api"
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = requests.request(method, f"{self.api}/{path}", json=body, timeout=self.timeout,
                                 headers={"Authorization": f"token {self.token}"}, allow_redirects=False)
        except requests.RequestException as e:
            raise AdminError(f"cannot reach the admin service at {self.api}: {e}") from None
        if r.status_code == 204:
            return None
        try:
            data = r.json()
        except ValueError:
            raise AdminError(f"the admin service answered {r.status_code} without JSON (is {self.api} the "
                             "facility's hub?)") from None
        if r.status_code >= 400:
            raise AdminError(str(data.get("message") or r.reason))
        return data


def _pairs(values: list[str] | None, option: str) -> dict[str, int]:
    out = {}
    for v in values or []:
        name, _, count = v.partition("=")
        if not name or not count.isdigit():
            raise AdminError(f"{option} {v!r}: expected NAME=COUNT with a whole number, e.g. t4=2")
        out[name] = int(count)
    return out


def policy_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.servers is not None:
        body["servers"] = args.servers
    if args.accelerator:
        body["accelerators"] = _pairs(args.accelerator, "--accelerator")
    if args.scope == "group":
        if args.queue_accelerator:
            body["queue_accelerators"] = _pairs(args.queue_accelerator, "--queue-accelerator")
        for key in ("queue_cpu", "queue_memory"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        if args.borrowing is not None:
            body["borrowing"] = args.borrowing == "yes"
    elif args.queue_accelerator or args.queue_cpu or args.queue_memory or args.borrowing:
        raise AdminError("queue quotas are a group's: --queue-* and --borrowing apply to `set group` only")
    return body


def _limits(v: dict[str, Any]) -> str:
    servers = "no limit" if v.get("servers") is None else v["servers"]
    return ", ".join([f"servers {servers}", *(f"{a} {n}" for a, n in v.get("accelerators", {}).items())])


def _describe(view: dict[str, Any]) -> str:
    lines = [f"{view['scope']} {view['name']}", f"  policy:    {json.dumps(view['policy']) if view['policy'] else '-'}",
             f"  in force:  {_limits(view['in_force'])}"]
    queue = view["in_force"].get("queue")
    if queue:
        accs = ", ".join(f"{a} {n}" for a, n in queue["accelerators"].items())
        lines.append(f"  queue:     cpu {queue['cpu']}, memory {queue['memory']}{', ' + accs if accs else ''}; "
                     f"borrowing {'yes' if queue['borrowing'] else 'no'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        client = AdminClient(args.hub, args.token)
        cmd = args.admin_command
        if cmd == "show" and args.scope:
            data = client.call("GET", f"{args.scope}s/{quote(args.name, safe='')}")
            print(json.dumps(data, indent=1) if args.json else _describe(data))
        elif cmd == "show":
            data = client.call("GET", "policies")
            print(json.dumps(data, indent=1) if args.json else
                  "\n".join(_describe(v) for v in [*data["groups"], *data["users"]]))
        elif cmd == "set":
            data = client.call("PUT", f"{args.scope}s/{quote(args.name, safe='')}", policy_body(args))
            print(_describe(data) if data["change"] else f"{args.scope} {args.name}: unchanged")
        elif cmd == "event":
            run_event(client, args)
        elif cmd == "reset":
            client.call("DELETE", f"{args.scope}s/{quote(args.name, safe='')}")
            print(f"{args.scope} {args.name}: the facility file's values apply again")
        else:
            rows = client.call("GET", f"audit?limit={args.limit}")
            if args.json:
                print(json.dumps(rows, indent=1))
            for c in rows if not args.json else []:
                when = datetime.fromtimestamp(c["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
                print(f"{when}  {c['actor']}  {c['scope']} {c['name']}: {json.dumps(c['before'])} -> "
                      f"{json.dumps(c['after'])}")
        return 0
    except AdminError as e:
        print(f"aifacility admin: {e}", file=sys.stderr)
        return 1


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="the facility's quota policies (administrators)", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    admin.add_argument("--hub", help="the hub's address (default: $AIFACILITY_HUB_URL)")
    admin.add_argument("--token", help="an administrator's JupyterHub token (default: $JUPYTERHUB_API_TOKEN)")
    asub = admin.add_subparsers(dest="admin_command", required=True)
    show = asub.add_parser("show", help="every policy, or one group's or user's")
    show.add_argument("scope", nargs="?", choices=["group", "user"])
    show.add_argument("name", nargs="?")
    show.add_argument("--json", action="store_true")
    st = asub.add_parser("set", help="replace a group's or user's policy")
    st.add_argument("scope", choices=["group", "user"])
    st.add_argument("name")
    st.add_argument("--servers", type=int, metavar="N", help="servers at once")
    st.add_argument("--accelerator", action="append", metavar="NAME=N",
                    help="units at once of an accelerator (GPU model, MIG profile, FPGA), e.g. t4=2")
    st.add_argument("--queue-accelerator", action="append", metavar="NAME=N", help="Kueue nominal quota")
    st.add_argument("--queue-cpu", metavar="Q", help="Kueue nominal CPU quota, e.g. 32")
    st.add_argument("--queue-memory", metavar="Q", help="Kueue nominal memory quota, e.g. 128Gi")
    st.add_argument("--borrowing", choices=["yes", "no"], help="may the group borrow from the cohort")
    rs = asub.add_parser("reset", help="remove a policy: the facility file's values apply again")
    rs.add_argument("scope", choices=["group", "user"])
    rs.add_argument("name")
    add_event_parser(asub)
    au = asub.add_parser("audit", help="who changed what, when, from what to what (latest first)")
    au.add_argument("--limit", type=int, default=50)
    au.add_argument("--json", action="store_true")
    admin.set_defaults(func=run)
