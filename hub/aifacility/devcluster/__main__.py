"""`python -m aifacility.devcluster --facility FILE --state-dir DIR --listen HOST:PORT`."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifacility.facility import FacilityError, load_facility

if TYPE_CHECKING:
    from aifacility.devcluster.cluster import DevCluster


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:6443)")
    return host, int(port)


def _load_plugin(spec: str) -> Callable[[Any], None]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--plugin {spec!r}: expected MODULE:FUNCTION (e.g. mypackage.vk:install)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--plugin {spec!r}: cannot import {module_name}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"--plugin {spec!r}: {module_name} has no function {attr}")
    return fn


def _interlink(value: str) -> tuple[str, str]:
    node, sep, url = value.partition("=")
    if not sep or not node or not url:
        raise argparse.ArgumentTypeError(f"'{value}' is not NODE=URL (e.g. vk-hpc-leonardo=http://127.0.0.1:4000)")
    return node, url


async def _serve(cluster: DevCluster) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    try:
        print(f"devcluster: API server at {cluster.url}", flush=True)
        print(f"devcluster: kubeconfig at {cluster.kubeconfig_path} (export KUBECONFIG={cluster.kubeconfig_path})",
              flush=True)
        await stop.wait()
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifacility.devcluster",
                                     description="Run the development cluster until SIGTERM or Ctrl-C.")
    parser.add_argument("--facility", help="facility file (default: $AIFACILITY_FACILITY or the demo facility)")
    parser.add_argument("--state-dir", required=True, type=Path, help="where the cluster keeps its state")
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 0), help="HOST:PORT of the API server")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE:FUNCTION",
                        help="call FUNCTION(cluster) at start, e.g. to serve interLink virtual nodes (repeatable)")
    parser.add_argument("--interlink", action="append", default=[], type=_interlink, metavar="NODE=URL",
                        help="the interLink plugin serving virtual node NODE (overrides its interlink.url; repeatable)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        facility = load_facility(args.facility)
    except FacilityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        plugins = [_load_plugin(spec) for spec in args.plugin]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = args.listen
    # Imported only now: a bad facility file is reported without loading the whole cluster.
    from aifacility.devcluster.cluster import DevCluster

    try:
        cluster = DevCluster(facility, args.state_dir, host, port, plugins=plugins,
                             interlink_urls=dict(args.interlink))
    except ValueError as e:  # an unknown virtual node or a bad plugin URL
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(cluster))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"error: cannot listen on {host}:{port}: the address is already in use", file=sys.stderr)
        else:
            print(f"error: cannot start the development cluster: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
