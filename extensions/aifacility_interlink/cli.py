"""`aifacility-interlink serve --backend slurm|htcondor --listen HOST:PORT --data-root DIR ...`"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import stat
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


def _mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an octal mode such as 600 or 660") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{value!r} is not an octal mode such as 600 or 660")
    if mode & 0o007:
        raise argparse.ArgumentTypeError(f"{value!r} would let every local user reach the plugin; use 600 or 660")
    return mode


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _unix_socket(path: str, mode: int) -> socket.socket:
    """Bind the socket with `mode` from the start (uvicorn's own would be 0666 for a moment, then chmod'ed)."""
    p = Path(path)
    if p.is_socket():
        p.unlink()  # left by a plugin that was killed
    elif p.exists():
        raise OSError(f"{path} exists and is not a socket; refusing to replace it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    return sock


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
    s.add_argument("--token-file", type=Path,
                   help="require 'Authorization: Bearer <token in this file>' on every request (needed to listen "
                        "on an address other than loopback)")
    s.add_argument("--socket-mode", type=_mode, default=0o600,
                   help="permissions of a unix:// socket, octal (default 600: only the plugin's own user)")
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
    if token is None and not isinstance(args.listen, str) and not is_loopback(args.listen[0]):
        print(f"aifacility-interlink: refusing to listen on {args.listen[0]}:{args.listen[1]} without a token: "
              "anyone who reaches that address could create, read and delete batch jobs. Give --token-file FILE "
              "(or token_file in the configuration), or listen on 127.0.0.1 or a unix:// socket.", file=sys.stderr)
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
    log = logging.getLogger("aifacility_interlink")
    if token is None:
        log.warning("no token configured: every process that can reach %s can use this plugin",
                    "the socket" if isinstance(args.listen, str) else "this address")
    elif cfg.token_file is not None and cfg.token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s can be read by other users; make it mode 0600", cfg.token_file)
    app = create_app(service, token)
    if isinstance(args.listen, str):
        try:
            sock = _unix_socket(args.listen, args.socket_mode)
        except OSError as exc:
            print(f"aifacility-interlink: cannot listen on unix://{args.listen}: {exc}", file=sys.stderr)
            return 2
        server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False))
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            Path(args.listen).unlink(missing_ok=True)
    else:
        host, port = args.listen
        uvicorn.run(app, host=host, port=port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
