"""Pod IP blocks: one /16 per cluster on which nothing listens, kept across restarts."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from aifacility.embedded.nodeagent.ipam import (
    PodIPs,
    choose_block,
    choose_bridge_block,
    listening_blocks,
    routed_blocks,
)


def test_a_block_with_a_listener_is_avoided(tmp_path: Path) -> None:
    first = choose_block(tmp_path / "a")
    assert 2 <= first <= 255
    assert choose_block(tmp_path / "a") == first  # kept in the state dir
    with socket.socket() as s:
        s.bind((f"127.{first}.0.1", 0))
        s.listen()
        assert first in listening_blocks()
        # Another cluster whose preferred block is busy moves on (a fresh state dir that hashes to it would).
        (tmp_path / "b").mkdir()
        other = choose_block(tmp_path / "b")
        assert other not in listening_blocks()


def test_a_bridge_block_no_route_covers_is_chosen_and_kept(tmp_path: Path) -> None:
    block = choose_bridge_block(tmp_path)
    assert 200 <= block <= 254 and block not in routed_blocks()
    assert choose_bridge_block(tmp_path) == block


def test_allocation_is_unique_and_reuses_known_addresses() -> None:
    ips = PodIPs(ipaddress.IPv4Network("127.40.0.0/16"))
    a, b = ips.allocate("a"), ips.allocate("b")
    assert a == "127.40.0.1" and b == "127.40.0.2"
    assert ips.allocate("a") == a
    assert ips.allocate("c", wanted=a) not in (a, b)  # taken: a new one
    assert ips.allocate("d", wanted="127.40.9.1") == "127.40.9.1"  # a pod's address from before a restart
    assert ips.allocate("e", wanted="127.0.0.1") != "127.0.0.1"  # never outside the network
    ips.release("a")
    assert ips.allocate("f", wanted=a) == a


def test_the_bridge_keeps_its_own_address() -> None:
    ips = PodIPs(ipaddress.IPv4Network("10.201.0.0/16"), skip=1)
    assert ips.allocate("a") == "10.201.0.2"
    assert ips.allocate("b", wanted="10.201.0.1") != "10.201.0.1"
    assert ips.allocate("c", wanted="127.201.0.9") != "127.201.0.9"  # from the shared network: a new one
