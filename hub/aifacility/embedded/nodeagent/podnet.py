"""Pod networking: every pod in a network namespace of its own, on one bridge per cluster (the model of the
bridge CNI plugin), so that a pod sees only its own traffic.

    net = await PodNetwork.open(state_dir)   # the bridge, 10.B.0.1/16 on the host; or shared loopback
    netns = await net.attach(uid, ip)        # a namespace with lo and eth0 (ip/16), its veth peer on the bridge
    forward = await ServiceForwarder.start(netns, ports)   # the host services the pod may reach
    ...; await forward.close(); await net.detach(uid)

The hub, the proxy and the probes reach a pod at its address through the bridge; pods reach each other the same
way. The host's services listen on loopback only, so a pod reaches the ones its configuration names (the hub's
API in JUPYTERHUB_API_URL, the API server of KUBERNETES_SERVICE_HOST) through a forwarder the node agent runs in
the pod's namespace, at the same loopback address and port, as kube-proxy makes a Service's address work in every
pod. Everything else on the host's loopback (etcd, the interLink plugin, other pods' traffic) is out of reach.

A machine where the agent cannot create network namespaces (not root, or no CAP_NET_ADMIN) gets the shared
loopback network instead: every pod on its own 127.B.x.y address on the host's loopback, and the node agent runs
the pods of one user only (see `local.py`), since isolation would be a pretence.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aifacility.embedded.nodeagent.ipam import choose_block, choose_bridge_block

log = logging.getLogger(__name__)

IP = "ip"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetworkError(RuntimeError):
    """A pod's network could not be set up (the `ip` command's own message)."""


async def _ip(*args: str, batch: Iterable[str] = ()) -> None:
    lines = "".join(f"{line}\n" for line in batch)
    argv = [IP, *args, *(["-batch", "-"] if lines else [])]
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(lines.encode() or None)
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")


@dataclass
class PodNetwork:
    """The cluster network of one node agent: `isolated` (a namespace per pod) or the shared loopback."""

    isolated: bool
    network: ipaddress.IPv4Network
    reason: str = ""  # why the network is shared, for the start-up message
    _users: dict[str, str] = field(default_factory=dict)  # shared network: pod uid -> its user

    @property
    def block(self) -> int:
        return self.network.network_address.packed[1]

    @property
    def bridge(self) -> str:
        return f"aifbr{self.block}"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's address on the bridge (pods are .0.2 and up)."""
        return self.network.network_address + 1

    @property
    def _prefix(self) -> str:
        return f"aif{self.block}-"

    def netns_name(self, uid: str) -> str:
        return self._prefix + uid

    def netns_path(self, uid: str) -> str:
        return str(NETNS_DIR / self.netns_name(uid))

    @staticmethod
    def _veth(uid: str) -> tuple[str, str]:
        """The host's and the pod's end of its veth pair (at most 15 characters, unique per pod uid)."""
        digest = hashlib.sha256(uid.encode()).hexdigest()[:12]
        return f"av{digest}", f"ap{digest}"

    @classmethod
    async def open(cls, state_dir: Path) -> PodNetwork:
        """The bridge for this state directory's cluster (kept across restarts), its stale pod namespaces removed;
        the shared loopback network where namespaces cannot be made here."""
        block = choose_bridge_block(state_dir)
        net = cls(True, ipaddress.IPv4Network(f"10.{block}.0.0/16"))
        try:
            with contextlib.suppress(NetworkError):  # already there after a restart
                await _ip("link", "add", net.bridge, "type", "bridge")
            await _ip(batch=[f"addr replace {net.gateway}/16 dev {net.bridge}", f"link set {net.bridge} up"])
            probe = f"{net._prefix}probe"
            await _ip(batch=[f"netns add {probe}", f"netns del {probe}"])
        except (NetworkError, OSError) as e:
            shared = cls(False, ipaddress.IPv4Network(f"127.{choose_block(state_dir)}.0.0/16"), reason=str(e))
            log.warning("pods share the host's loopback network: %s", e)
            return shared
        await net._remove_stale()
        return net

    def _namespaces(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(self._prefix))
        except OSError:
            return []

    async def _remove_stale(self) -> None:
        """Namespaces of pods from before a restart of the agent (their processes died with it)."""
        for name in self._namespaces():
            await self._delete(name.removeprefix(self._prefix))

    def admit(self, uid: str, user: str | None) -> str | None:
        """Why a user's pod may not run here (None: it may). On the shared network every pod could reach every
        other's traffic, so the pods of the first user only; on the bridged network, anyone's."""
        if self.isolated or not user:
            return None
        others = sorted({u for k, u in self._users.items() if k != uid and u != user})
        if others:
            return (f"this machine gives pods no network namespace of their own ({self.reason}), so it serves one "
                    f"user at a time and {others[0]} has a pod here: run the node agent as root, or stop that pod")
        self._users[uid] = user
        return None

    def forget(self, uid: str) -> None:
        self._users.pop(uid, None)

    async def attach(self, uid: str, ip: str) -> str | None:
        """The pod's namespace (its path), made anew: lo, and eth0 with `ip` on the bridge. None: shared network."""
        if not self.isolated:
            return None
        await self._delete(uid)
        name, (host, peer) = self.netns_name(uid), self._veth(uid)
        try:
            await _ip(batch=[f"netns add {name}", f"link add {host} type veth peer name {peer} netns {name}",
                             f"link set {host} master {self.bridge} up"])
            await _ip("-n", name, batch=[f"link set {peer} name eth0",
                                         f"addr add {ip}/{self.network.prefixlen} dev eth0",
                                         "link set eth0 up", "link set lo up"])
        except NetworkError:
            await self._delete(uid)
            raise
        return self.netns_path(uid)

    async def detach(self, uid: str) -> None:
        if self.isolated:
            await self._delete(uid)

    async def _delete(self, uid: str) -> None:
        # The veth first: deleting it is immediate, a namespace's own teardown is not.
        with contextlib.suppress(NetworkError):
            await _ip("link", "del", self._veth(uid)[0])
        if self.netns_name(uid) in self._namespaces():
            with contextlib.suppress(NetworkError):
                await _ip("netns", "del", self.netns_name(uid))

    async def close(self) -> None:
        """The node agent stops: its pods' namespaces and the bridge go."""
        if not self.isolated:
            return
        await self._remove_stale()
        with contextlib.suppress(NetworkError):
            await _ip("link", "del", self.bridge)


# ---- the host's services inside a pod's namespace -------------------------------------------------------------

# A loopback address and port in a container's environment: `http://127.0.0.1:8081/hub/api`, `localhost:6443`.
_LOOPBACK_PORT = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})(?!\d)")


def service_ports(env_values: Iterable[str], always: Iterable[int], internal: Iterable[int]) -> list[int]:
    """The host ports a pod reaches: `always` (the API server) and those its environment names on loopback,
    never the cluster's `internal` ones (etcd, the controllers, Kueue, kubelets, interLink plugins)."""
    named = {int(m) for value in env_values for m in _LOOPBACK_PORT.findall(value)}
    return sorted(p for p in {*always, *named} - set(internal) if 0 < p < 65536)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(path: str, make: Callable[[], T]) -> T:
    """`make()` run in the network namespace at `path` (a socket made there stays there), on a thread of its own:
    setns changes only the calling thread, and this one ends after, whatever happens."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as e:  # handed to the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name="netns", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class ServiceForwarder:
    """Listens in a pod's namespace on 127.0.0.1 (and ::1) at each port, and joins every connection to the same
    port on the host's loopback."""

    def __init__(self, servers: list[asyncio.Server]) -> None:
        self._servers = servers

    @classmethod
    async def start(cls, netns: str, ports: Iterable[int]) -> ServiceForwarder:
        servers: list[asyncio.Server] = []
        for port in ports:
            handler = _joiner(port)
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                try:
                    sock = await asyncio.to_thread(in_netns, netns, lambda f=family, h=host, p=port: _listener(f, h, p))
                except OSError as e:
                    if family == socket.AF_INET:
                        for server in servers:
                            server.close()
                        raise NetworkError(f"cannot forward port {port} into the pod: {e}") from e
                    continue  # no IPv6 in the namespace
                servers.append(await asyncio.start_server(handler, sock=sock))
        return cls(servers)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)


def _joiner(port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def join(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()  # as the service itself would: nothing listens there
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
    return join
