"""Pod IPs: one loopback address per pod, so every pod can listen on its own IP while sharing the host network.

The pool is 127.16.0.0/12 (127.16.0.1 - 127.31.255.254), away from 127.0.0.1 (the host's services) and
127.1.0.0/16 (the nodes' addresses). Linux routes all of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import ipaddress

_FIRST = int(ipaddress.IPv4Address("127.16.0.1"))
_LAST = int(ipaddress.IPv4Address("127.31.255.254"))


class PodIPs:
    def __init__(self) -> None:
        self._by_uid: dict[str, str] = {}
        self._used: set[str] = set()
        self._next = _FIRST

    def reserve(self, uid: str, ip: str) -> None:
        """An address a pod already has (read back from the store at start)."""
        self._by_uid[uid] = ip
        self._used.add(ip)

    def allocate(self, uid: str, wanted: str | None = None) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        if wanted and _FIRST <= int(ipaddress.IPv4Address(wanted)) <= _LAST and wanted not in self._used:
            self.reserve(uid, wanted)
            return wanted
        for _ in range(_LAST - _FIRST + 1):
            candidate = str(ipaddress.IPv4Address(self._next))
            self._next = self._next + 1 if self._next < _LAST else _FIRST
            if candidate.endswith((".0", ".255")) or candidate in self._used:
                continue
            self.reserve(uid, candidate)
            return candidate
        raise RuntimeError("the pod IP range 127.16.0.0/12 is exhausted")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._used.discard(ip)
