"""`aifacility-interlink serve --backend slurm|htcondor --listen HOST:PORT --data-root DIR ...`"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .backends.base import Backend
from .config import ConfigError, PluginConfig, load_config


def _listen(value: str) -> tuple[str, int] | str:
    """HOST:PORT, or unix:///path/to.sock (interLink reaches plugins over either)."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:").removeprefix("//")
        if not path.startswith("/"):
            raise argparse.ArgumentTypeError(f"{value!r}: the socket path must be absolute (unix:///run/x.sock)")
        return path
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:4000) or unix:///path")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aifacility-interlink", description="interLink plugin for SLURM/HTCondor")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the plugin server")
    s.add_argument("--backend", choices=["slurm", "htcondor"])
    s.add_argument("--listen", type=_listen, default=("127.0.0.1", 4000),
                   help="HOST:PORT or unix:///path.sock (default 127.0.0.1:4000)")
    s.add_argument("--data-root", type=Path, help="job dirs and the state database (on the shared filesystem)")
    s.add_argument("--runtime", choices=["apptainer", "singularity", "bwrap", "none"])
    s.add_argument("--config", type=Path, help="YAML file: flavors, resource mappings, token, ping settings")
    s.add_argument("--token-file", type=Path, help="require 'Authorization: Bearer <token in this file>'")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def make_backend(cfg: PluginConfig) -> Backend:
    if cfg.backend == "slurm":
        from .backends.slurm import SlurmBackend

        return SlurmBackend(cfg)
    from .backends.htcondor import HTCondorBackend

    return HTCondorBackend(cfg)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, backend=args.backend, data_root=args.data_root, runtime=args.runtime,
                          token_file=args.token_file)
        token = cfg.bearer_token()
    except (ConfigError, OSError) as exc:
        print(f"aifacility-interlink: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .server import create_app
    from .service import PluginService

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = PluginService(cfg, make_backend(cfg))
    except Exception as exc:  # e.g. an unwritable data root, missing HTCondor bindings
        print(f"aifacility-interlink: cannot start: {exc}", file=sys.stderr)
        return 2
    app = create_app(service, token)
    if isinstance(args.listen, str):
        uvicorn.run(app, uds=args.listen, log_level=args.log_level, access_log=False)
    else:
        host, port = args.listen
        uvicorn.run(app, host=host, port=port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
