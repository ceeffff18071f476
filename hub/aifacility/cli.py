"""The `aifacility` command: run the embedded facility, check and render facility files, submit jobs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aifacility.facility import FacilityError, demo_facility_path, load_facility
from aifacility.facility.model import Facility


def _cmd_up(args: argparse.Namespace) -> int:
    from aifacility.launcher.up import UpOptions, run_up

    return run_up(UpOptions(
        facility=Path(args.facility) if args.facility else demo_facility_path(),
        state_dir=Path(args.state_dir).absolute(),
        host=args.host,
        port=args.port,
        demo_users=Path(args.demo_users).absolute() if args.demo_users else None,
        host_gpus=args.host_gpus,
        gpu_replicas=args.gpu_replicas,
    ))


def _cmd_check(args: argparse.Namespace) -> int:
    f = load_facility(args.facility)
    accelerators = sum(sum(n.accelerators.values()) for n in f.nodes)
    print(f"{args.facility}: facility '{f.name}' is valid: {len(f.nodes)} nodes, {accelerators} accelerator "
          f"units, {len(f.profiles)} profiles, {len(f.images)} images")
    if args.host_gpus or f.host_gpus.enabled:
        from aifacility.embedded.nodeagent.hostgpus import DiscoveryError, discover, explain, host_node

        replicas = args.gpu_replicas if args.gpu_replicas is not None else f.host_gpus.replicas
        if replicas < 1:
            print("aifacility: --gpu-replicas must be 1 or more", file=sys.stderr)
            return 2
        try:
            gpus = discover()
        except DiscoveryError as e:
            print(f"aifacility: {e}", file=sys.stderr)
            return 2
        print("\n".join(explain(f, gpus, host_node(f, gpus, replicas=replicas))))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Facility.model_json_schema(), indent=2))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    import yaml

    from aifacility.facility.namespace import notebook_namespace
    from aifacility.kueue.render import render

    facility = load_facility(args.facility)
    objects = [notebook_namespace(facility.namespace)] if args.what == "namespace" else render(facility)
    if args.output == "json":
        print(json.dumps(objects, indent=1))
    else:
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aifacility", description="A multi-tenant analysis facility for physicists.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the embedded facility (Kubernetes control plane, Kueue, node agent, "
                                   "OIDC provider, hub)")
    up.add_argument("--facility", help="facility file (default: the shipped demo facility)")
    up.add_argument("--state-dir", default=".state", help="where the facility keeps its state (default: .state)")
    up.add_argument("--port", type=int, default=8000, help="port of the facility's web address (default: 8000)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; demo accounts exist only on loopback)")
    up.add_argument("--demo-users", metavar="FILE",
                    help="YAML list of {username, groups}: more demo accounts (password 'demo', loopback only)")
    up.add_argument("--host-gpus", action="store_true",
                    help="serve this machine's NVIDIA GPUs to sessions and jobs, as host_gpus.enabled in the facility "
                         "file does (see `aifacility check --host-gpus`)")
    up.add_argument("--gpu-replicas", type=int, default=None,
                    help="with host GPUs: time-slicing, each whole GPU shared by up to N pods (default: the facility "
                         "file's host_gpus.replicas, 1)")
    up.set_defaults(func=_cmd_up)

    check = sub.add_parser("check", help="validate a facility file")
    check.add_argument("facility")
    check.add_argument("--host-gpus", action="store_true",
                       help="also read this machine's NVIDIA GPUs and say which accelerators and profiles they serve")
    check.add_argument("--gpu-replicas", type=int, default=None,
                       help="time-slicing: advertise each whole GPU N times (default: host_gpus.replicas, 1)")
    check.set_defaults(func=_cmd_check)

    schema = sub.add_parser("schema", help="print the JSON schema of the facility file")
    schema.set_defaults(func=_cmd_schema)

    render = sub.add_parser("render", help="print the Kubernetes objects the facility file implies "
                                           "(for kubectl apply -f -)")
    render.add_argument("what", choices=["namespace", "kueue"],
                        help="namespace: the notebooks' Namespace with its Pod Security and Kueue labels (apply it "
                             "first); kueue: ResourceFlavors, ClusterQueues (one per group, one cohort), "
                             "LocalQueues, WorkloadPriorityClasses")
    render.add_argument("facility", nargs="?", help="facility file (default: $AIFACILITY_FACILITY, else the demo)")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.set_defaults(func=_cmd_render)

    from aifacility.jobs.cli import add_parser as add_jobs_parser

    add_jobs_parser(sub)
    from aifacility.admin.cli import add_parser as add_admin_parser

    add_admin_parser(sub)
    from aifacility.accounting.cli import add_parsers as add_accounting_parsers

    add_accounting_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in ("accounting", "report"):
            from aifacility.accounting.cli import run

            return run(args.func, args)
        return int(args.func(args))
    except FacilityError as e:
        print(f"aifacility: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
