"""`aifacility admin event ...`: events for organisers and admins, through the admin service's REST API.

    aifacility admin event create FILE        (a YAML or JSON event: docs/admin/events.md; prints its join codes)
    aifacility admin event list [--json]
    aifacility admin event show NAME [--json] (who joined, its log, and its usage report once it ended)
    aifacility admin event codes NAME N       (N more join codes)
    aifacility admin event cancel NAME        (before it starts)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

if TYPE_CHECKING:
    from aifacility.admin.cli import AdminClient

MAX_FILE_BYTES = 64 * 1024


def read_event(path: str) -> Any:
    from aifacility.admin.cli import AdminError

    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise AdminError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; an event is a short YAML file")
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise AdminError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise AdminError(f"{path} is not YAML: {str(e).splitlines()[0]}") from None
    # YAML reads 2027-03-01T09:00:00Z as a datetime; the API takes ISO 8601 text (and refuses a missing zone).
    return json.loads(json.dumps(data, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)))


def _line(e: dict[str, Any]) -> str:
    codes = e["join_codes"]
    return (f"{e['name']:<20} {e['state']:<10} {e['starts_at']} .. {e['ends_at']}  {e['title']}  "
            f"(join codes {codes['used']}/{codes['made']} used; organisers {', '.join(e['organisers'])})")


def run_event(client: AdminClient, args: argparse.Namespace) -> None:
    cmd = args.event_command
    if cmd == "create":
        data = client.call("POST", "events", read_event(args.file))
        print(f"event {data['name']} created; its participants' group is {data['group']}.")
        if data["join_codes"]:
            print(f"Join codes (shown once; each makes one account at <hub>{data['join_url']}):")
            print("\n".join(f"  {c}" for c in data["join_codes"]))
    elif cmd == "list":
        rows = client.call("GET", "events")
        print(json.dumps(rows, indent=1) if args.json else "\n".join(_line(e) for e in rows) or "no events")
    elif cmd == "show":
        data = client.call("GET", f"events/{quote(args.name, safe='')}")
        if args.json:
            print(json.dumps(data, indent=1))
            return
        print(_line(data))
        print(f"  joined with codes: {', '.join(data['participants_joined']) or 'nobody yet'}")
        for h in data["log"]:
            print(f"  {h['action']:<10} {h['message']}")
        if data["report"]:
            for p in data["report"]["participants"]:
                print(f"  report: {p['user']:<24} GPU-h {p['gpu_hours']}  CPU core-h {p['cpu_core_hours']}")
    elif cmd == "codes":
        data = client.call("POST", f"events/{quote(args.name, safe='')}/codes", {"count": args.count})
        print("\n".join(data["join_codes"]))
    else:
        client.call("DELETE", f"events/{quote(args.name, safe='')}")
        print(f"event {args.name}: cancelled")


def add_event_parser(asub: Any) -> None:
    ev = asub.add_parser("event", help="events (hackathons, schools): organisers and administrators",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = ev.add_subparsers(dest="event_command", required=True)
    esub.add_parser("create", help="create an event from a YAML file").add_argument("file")
    ls = esub.add_parser("list", help="the events you organise (all of them for administrators)")
    ls.add_argument("--json", action="store_true")
    show = esub.add_parser("show", help="one event: who joined, its log, its usage report")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    codes = esub.add_parser("codes", help="more join codes")
    codes.add_argument("name")
    codes.add_argument("count", type=int)
    esub.add_parser("cancel", help="cancel an event before it starts").add_argument("name")
