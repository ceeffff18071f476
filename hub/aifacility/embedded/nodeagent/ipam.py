"""Pod IPs: one loopback address per pod, so every pod can listen on its own IP while sharing the host network.

Each cluster takes one /16 of 127.0.0.0/8 for its pods (127.B.0.1 - 127.B.255.254, B in 2..255), away from
127.0.0.1 (the host's services) and 127.1.0.0/16 (the nodes' addresses). Several embedded clusters may run
on one machine (tests, `aifacility up`), and two notebooks on the same IP and port would collide, so the block
is one on which nothing listens yet, chosen once and kept in the state dir (pods keep their IPs on restart).
Linux routes all of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

BLOCK_FILE = "pod-ip-block"
_BLOCKS = range(2, 256)


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


def choose_block(state_dir: Path) -> int:
    path = state_dir / BLOCK_FILE
    try:
        block = int(path.read_text().strip())
        if block in _BLOCKS:
            return block
    except (OSError, ValueError):
        pass
    # Start from a position derived from the state dir, so that clusters rarely even try the same block.
    start = int(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest(), 16) % len(_BLOCKS)
    busy = listening_blocks()
    order = [_BLOCKS[(start + i) % len(_BLOCKS)] for i in range(len(_BLOCKS))]
    block = next((b for b in order if b not in busy), order[0])
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{block}\n")
    return block


class PodIPs:
    def __init__(self, block: int = 16) -> None:
        self._first = int(ipaddress.IPv4Address(f"127.{block}.0.1"))
        self._last = int(ipaddress.IPv4Address(f"127.{block}.255.254"))
        self._by_uid: dict[str, str] = {}
        self._used: set[str] = set()
        self._next = self._first

    @staticmethod
    def usable(ip: str) -> bool:
        """A pod address: in 127.0.0.0/8, outside the host's 127.0/16 and the nodes' 127.1/16."""
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        return addr in ipaddress.IPv4Network("127.0.0.0/8") and addr.packed[1] >= 2

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
        raise RuntimeError("the cluster's pod IP range is exhausted (65534 pods)")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._used.discard(ip)
