"""Pod IP blocks: one /16 per cluster on which nothing listens, kept across restarts."""

from __future__ import annotations

import socket
from pathlib import Path

from aifacility.embedded.nodeagent.ipam import PodIPs, choose_block, listening_blocks


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


def test_allocation_is_unique_and_reuses_known_addresses() -> None:
    ips = PodIPs(40)
    a, b = ips.allocate("a"), ips.allocate("b")
    assert a == "127.40.0.1" and b == "127.40.0.2"
    assert ips.allocate("a") == a
    assert ips.allocate("c", wanted=a) not in (a, b)  # taken: a new one
    assert ips.allocate("d", wanted="127.99.1.1") == "127.99.1.1"  # a pod's address from before a restart
    assert ips.allocate("e", wanted="127.0.0.1") != "127.0.0.1"  # never the host's
    ips.release("a")
    assert ips.allocate("f", wanted=a) == a
