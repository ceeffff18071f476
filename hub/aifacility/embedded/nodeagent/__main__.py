"""`python -m aifacility.embedded.nodeagent --state-dir DIR [--facility FILE]`: run the node agent until SIGTERM."""

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
        print(f"node agent: serving nodes {', '.join(agent.kubelets)}", flush=True)
        await stop.wait()
    finally:
        await agent.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifacility.embedded.nodeagent",
                                     description="Run the embedded cluster's node agent until SIGTERM or Ctrl-C.")
    parser.add_argument("--facility", help="facility file (default: $AIFACILITY_FACILITY or the demo facility)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        facility = load_facility(args.facility)
        plane = ControlPlane(args.state_dir, facility.namespace, [n.name for n in facility.nodes], starts=False)
    except (FacilityError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from aifacility.embedded.nodeagent.agent import NodeAgent
    asyncio.run(_serve(NodeAgent(facility, args.state_dir, plane)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
