"""`python -m aifacility.embedded.nodeagent --state-dir DIR [--facility FILE] [--interlink NODE=URL ...]`: run the
node agent until SIGTERM. The interLink plugins' token is read from the file $AIFACILITY_INTERLINK_TOKEN_FILE
names (what `aifacility up` writes)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aifacility.embedded.controlplane.plane import ControlPlane
from aifacility.facility import FacilityError, load_facility
from aifacility.launcher.supervisor import LaunchError


async def _serve(agent: object) -> None:
    from aifacility.embedded.nodeagent.agent import NodeAgent
    assert isinstance(agent, NodeAgent)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        print(f"node agent: serving nodes {', '.join([*agent.kubelets, *agent.virtual.kubelets])}", flush=True)
        await stop.wait()
    finally:
        await agent.stop()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value} s is out of range (more than 0, at most 3600)")
    return seconds


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifacility.embedded.nodeagent",
                                     description="Run the embedded cluster's node agent until SIGTERM or Ctrl-C.")
    parser.add_argument("--facility", help="facility file (default: $AIFACILITY_FACILITY or the demo facility)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--interlink", action="append", default=[], metavar="NODE=URL",
                        help="the interLink plugin serving virtual node NODE (repeatable)")
    parser.add_argument("--ping-interval", type=_seconds, default=30.0, metavar="SECONDS",
                        help="how often virtual nodes ping their interLink plugin (default 30, as interLink)")
    parser.add_argument("--status-interval", type=_seconds, default=5.0, metavar="SECONDS",
                        help="how often virtual nodes ask their plugin for their pods' status (default 5)")
    parser.add_argument("--gpu-metrics-port", type=_port, metavar="PORT",
                        help="with a node of this machine's GPUs (aifacility up --host-gpus): serve their figures "
                             "under the DCGM exporter's names at http://127.0.0.1:PORT/metrics")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from aifacility.embedded.nodeagent.agent import NodeAgent
    from aifacility.embedded.virtualnode.controller import parse_interlink_options, plugin_urls
    from aifacility_interlink.client import token_from_env
    try:
        facility = load_facility(args.facility)
        interlink = parse_interlink_options(args.interlink)
        plugin_urls(facility, interlink)  # every option names a virtual node, with a URL it can use
        token = token_from_env()
        plane = ControlPlane(args.state_dir, facility.namespace, [n.name for n in facility.nodes], starts=False)
        agent = NodeAgent(facility, args.state_dir, plane, interlink=interlink, plugin_token=token,
                          ping_interval=args.ping_interval, status_interval=args.status_interval,
                          gpu_metrics_port=args.gpu_metrics_port)
    except (FacilityError, LaunchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(_serve(agent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
