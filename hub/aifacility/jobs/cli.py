"""`aifacility jobs ...`: batch and notebook jobs from a session's terminal, with the session's own identity.

    aifacility jobs submit [--group G] [--gpu MODEL:N | --mig PROFILE:N | --fpga MODEL:N] [--cpu C] [--memory M]
                           [--image I] [--offload TARGET] [--time HOURS] [--wait] -- COMMAND...
    aifacility jobs submit notebook.ipynb [-p NAME VALUE ...]
    aifacility jobs list [--all]
    aifacility jobs status NAME
    aifacility jobs logs NAME [--follow]
    aifacility jobs cancel NAME
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from aifacility.jobs.client import FINAL, JobsClient, JobsError
from aifacility.jobs.status import line


def _value(raw: str) -> Any:
    """-p values are typed as papermill's are: numbers, booleans and null as such, anything else a string."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (int, float, bool)) or value is None else raw


def _progress(model: dict[str, Any]) -> None:
    text = f"{model['name']}: {model['phase']}"
    if model["phase"] == "Queued":
        if model.get("position"):
            text += f", position {model['position']} in the '{model.get('queue')}' queue"
        if model.get("waiting_for"):
            text += f" (waiting for: {model['waiting_for']})"
    elif model.get("site"):
        text += f" on {model.get('node')} ({model['site']})"
    if model.get("reason"):
        text += f": {model['reason']}"
    print(text, file=sys.stderr, flush=True)


def describe(model: dict[str, Any]) -> str:
    flavors = (model.get("admission") or {}).get("flavors") or {}
    rows = [
        ("name", model["name"]), ("user", model.get("user")), ("group", model.get("group")),
        ("kind", model.get("kind")), ("command", model.get("command")), ("phase", model["phase"]),
        ("queue", model.get("queue")),
    ]
    if model["phase"] == "Queued":
        rows += [("position", model.get("position") or "entering the queue"),
                 ("waiting for", model.get("waiting_for") or "-")]
    if flavors:
        rows.append(("admitted to", ", ".join(f"{r}={f}" for r, f in sorted(flavors.items()))))
    if model.get("borrowing"):
        lent = ", ".join(f"{b['borrowed']} {b['resource']} on {b['flavor']}" for b in model["borrowing"])
        rows.append(("borrowing", f"group {model.get('group')} is using {lent} beyond its quota, lent by idle "
                                  "groups of the cohort"))
    rows += [("node", model.get("node") or "-"), ("site", model.get("site") or "-"),
             ("created", model.get("created")), ("started", model.get("started") or "-"),
             ("finished", model.get("finished") or "-"), ("time limit", f"{model.get('max_seconds', 0)} s")]
    if model.get("exit_code") is not None:
        rows.append(("exit code", model["exit_code"]))
    if model.get("reason"):
        rows.append(("reason", model["reason"]))
    if model.get("output_notebook"):
        rows.append(("output notebook", f"~/{model['output_notebook']}"))
    return "\n".join(f"{k + ':':<17}{v}" for k, v in rows)


def _submit(client: JobsClient, a: argparse.Namespace) -> int:
    rest = list(a.what)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise JobsError("Give the command to run after --, or a notebook (.ipynb).")
    notebook = rest[0] if rest[0].endswith(".ipynb") else None
    pairs = list(a.parameter or [])
    if notebook is not None and len(rest) > 1:
        # Options after the notebook's name (argparse hands them over with it): parameters and the flags.
        tail = argparse.ArgumentParser(prog="aifacility jobs submit NOTEBOOK", add_help=False, exit_on_error=False)
        tail.add_argument("-p", "--parameter", nargs=2, action="append", default=[])
        tail.add_argument("--wait", action="store_true")
        tail.add_argument("--json", action="store_true")
        try:
            more, unknown = tail.parse_known_args(rest[1:])
        except argparse.ArgumentError as e:
            raise JobsError(f"after the notebook: {e}") from None
        if unknown:
            raise JobsError(f"after the notebook only -p NAME VALUE, --wait and --json may follow, not "
                            f"{' '.join(unknown)[:200]}")
        pairs += more.parameter
        a.wait, a.json = a.wait or more.wait, a.json or more.json
    params = {name: _value(value) for name, value in pairs}
    if params and notebook is None:
        raise JobsError("-p NAME VALUE is for notebook jobs: pass arguments to a command after --.")
    job = client.submit(None if notebook else rest, notebook=notebook, parameters=params or None, group=a.group,
                        image=a.image, cpu=a.cpu, memory=a.memory, gpu=a.gpu, mig=a.mig, fpga=a.fpga,
                        offload=a.offload, hours=a.time)
    if a.json:
        print(json.dumps(job, indent=1))
    else:
        print(job["name"])
    if not a.wait:
        _progress(job)
        return 0
    final = client.wait(job["name"], progress=_progress)
    return 0 if final["phase"] == "Succeeded" else int(final.get("exit_code") or 1)


def _run(a: argparse.Namespace) -> int:
    client = JobsClient()
    if a.jobs_command == "submit":
        return _submit(client, a)
    if a.jobs_command == "list":
        jobs = client.list(everyone=a.all)
        if a.json:
            print(json.dumps(jobs, indent=1))
        else:
            print(f"{'NAME':<48} {'PHASE':<10} {'GROUP':<10} {'FLAVOR':<16} {'SITE':<8}")
            for model in jobs:
                print(line(model))
        return 0
    if a.jobs_command == "status":
        model = client.status(a.name)
        print(json.dumps(model, indent=1) if a.json else describe(model))
        return 0
    if a.jobs_command == "logs":
        for chunk in client.logs(a.name, follow=a.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return 0
    if a.jobs_command == "cancel":
        client.cancel(a.name)
        print(f"{a.name}: cancelled")
        return 0
    raise AssertionError(a.jobs_command)


def run(a: argparse.Namespace) -> int:
    try:
        return _run(a)
    except JobsError as e:
        print(f"aifacility jobs: {e}", file=sys.stderr)
        return 2


def add_parser(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="batch and notebook jobs, queued by Kueue under your group's quota",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    s = jsub.add_parser("submit", help="run a command or a notebook as a job")
    s.add_argument("--group", help="the group to charge (default: the facility's, or your only group)")
    accel = s.add_mutually_exclusive_group()
    accel.add_argument("--gpu", metavar="MODEL[:N]", help="whole GPUs, e.g. t4:1")
    accel.add_argument("--mig", metavar="PROFILE[:N]", help="A100 MIG slices, e.g. 1g.10gb:1")
    accel.add_argument("--fpga", metavar="MODEL[:N]", help="FPGAs, e.g. alveo-v70:1")
    s.add_argument("--cpu", help="CPU cores (e.g. 2, 500m)")
    s.add_argument("--memory", help="memory (e.g. 8Gi)")
    s.add_argument("--image", help="one of the facility's images (e.g. ml, hep)")
    s.add_argument("--offload", metavar="TARGET", help="run on an interLink site (e.g. hpc, htc)")
    s.add_argument("--time", type=float, metavar="HOURS", help="wall-time limit in hours")
    s.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter (papermill)")
    s.add_argument("--wait", action="store_true", help="wait for the job to end, showing its progress")
    s.add_argument("--json", action="store_true", help="print the job's model as JSON")
    s.add_argument("what", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...], or NOTEBOOK.ipynb")
    ls = jsub.add_parser("list", help="your jobs, newest first")
    ls.add_argument("--all", action="store_true", help="everyone's (administrators)")
    ls.add_argument("--json", action="store_true")
    st = jsub.add_parser("status", help="phase, queue position, admitted flavor, node and site, exit code")
    st.add_argument("name")
    st.add_argument("--json", action="store_true")
    lg = jsub.add_parser("logs", help="the job's output")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true", help="keep following until the job ends")
    cn = jsub.add_parser("cancel", help="stop and delete a job")
    cn.add_argument("name")
    jobs.set_defaults(func=run)


__all__ = ["FINAL", "add_parser", "run"]
