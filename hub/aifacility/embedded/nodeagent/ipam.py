"""Pod IPs: one /16 per cluster, one address per pod, kept across restarts of the node agent.

With a network namespace per pod (`podnet.py`) the cluster's network is 10.B.0.0/16 (B in 200..254, a block no
route of the machine covers yet), its bridge 10.B.0.1 and the pods 10.B.0.2 and up. On the shared loopback
network (a machine without namespaces) it is one /16 of 127.0.0.0/8 (127.B.0.1 - 127.B.255.254, B in 2..255),
away from 127.0.0.1 (the host's services) and 127.1.0.0/16 (the nodes' addresses), on which nothing listens yet;
Linux routes all of 127.0.0.0/8 to the loopback interface. Several embedded clusters may run on one machine
(tests, `aifacility up`), so the block is chosen once and kept in the state dir.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

BLOCK_FILE = "pod-ip-block"
BRIDGE_BLOCK_FILE = "pod-bridge-block"
_BLOCKS = range(2, 256)
_BRIDGE_BLOCKS = range(200, 255)


def listening_blocks() -> set[int]:
    """Second octets of the 127.x addresses that have a listening TCP socket now (from /proc/net/tcp)."""
    used: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return used
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
            continue
        address = fields[1].split(":")[0]
        octets = bytes.fromhex(address)[::-1]  # little-endian on x86
        if octets[0] == 127:
            used.add(octets[1])
    return used


def routed_blocks() -> set[int]:
    """Second octets of the 10.B.0.0/16 blocks that a route of this machine overlaps (the default route aside)."""
    used: set[int] = set()
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return used
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or int(fields[7], 16) == 0:
            continue
        dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        route = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        used.update(b for b in _BRIDGE_BLOCKS if route.overlaps(ipaddress.IPv4Network(f"10.{b}.0.0/16")))
    return used


def _choose(state_dir: Path, file: str, blocks: range, busy: set[int]) -> int:
    path = state_dir / file
    try:
        block = int(path.read_text().strip())
        if block in blocks:
            return block
    except (OSError, ValueError):
        pass
    # Start from a position derived from the state dir, so that clusters rarely even try the same block.
    start = int(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest(), 16) % len(blocks)
    order = [blocks[(start + i) % len(blocks)] for i in range(len(blocks))]
    block = next((b for b in order if b not in busy), order[0])
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{block}\n")
    return block


def choose_block(state_dir: Path) -> int:
    """B of the shared loopback network 127.B.0.0/16."""
    return _choose(state_dir, BLOCK_FILE, _BLOCKS, listening_blocks())


def choose_bridge_block(state_dir: Path) -> int:
    """B of the bridged network 10.B.0.0/16."""
    return _choose(state_dir, BRIDGE_BLOCK_FILE, _BRIDGE_BLOCKS, routed_blocks())


class PodIPs:
    def __init__(self, network: ipaddress.IPv4Network, *, skip: int = 0) -> None:
        """Addresses of `network`, after its first `skip` hosts (the bridge's own)."""
        self.network = network
        self._first = int(network.network_address) + 1 + skip
        self._last = int(network.broadcast_address) - 1
        self._by_uid: dict[str, str] = {}
        self._used: set[str] = set()
        self._next = self._first

    def usable(self, ip: str) -> bool:
        """A pod address of this network (a pod's address from before a restart may be reused)."""
        try:
            addr = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self._first <= addr <= self._last

    def reserve(self, uid: str, ip: str) -> None:
        """An address a pod already has (read back from the store at start)."""
        self._by_uid[uid] = ip
        self._used.add(ip)

    def allocate(self, uid: str, wanted: str | None = None) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        if wanted and self.usable(wanted) and wanted not in self._used:
            self.reserve(uid, wanted)
            return wanted
        for _ in range(self._last - self._first + 1):
            candidate = str(ipaddress.IPv4Address(self._next))
            self._next = self._next + 1 if self._next < self._last else self._first
            if candidate.endswith((".0", ".255")) or candidate in self._used:
                continue
            self.reserve(uid, candidate)
            return candidate
        raise RuntimeError(f"the cluster's pod network {self.network} is exhausted")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._used.discard(ip)
