"""Fixtures of the spawner tests: the demo facility, users with hub groups, and a spawner that can render pods.

KubeSpawner loads a kubeconfig when it is constructed; the unit tests never talk to a cluster, so they get a
kubeconfig pointing at a closed loopback port (any request would fail at once instead of hanging).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aifacility.facility import Facility, load_facility
from aifacility.facility.loader import demo_facility_path


@dataclass
class Group:
    name: str


@dataclass
class HubUser:
    """The attributes of jupyterhub.user.User that KubeSpawner and FacilitySpawner read."""

    name: str
    groups: list[Group] = field(default_factory=list)
    id: int = 1
    url: str = "/user/x/"
    escaped_name: str = ""

    def __post_init__(self) -> None:
        self.url = f"/user/{self.name}/"
        self.escaped_name = self.name


def hub_user(name: str, *groups: str) -> HubUser:
    return HubUser(name=name, groups=[Group(g) for g in groups])


@pytest.fixture
def make_user() -> Any:
    return hub_user


@pytest.fixture(scope="session")
def facility() -> Facility:
    return load_facility(demo_facility_path())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{_closed_port()}"}}}}]
users: [{{name: u, user: {{token: unit-test}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: aifacility}}}}]
current-context: c
""")
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes_asyncio reads $KUBECONFIG once, at import time.
    import kubernetes_asyncio.config.kube_config as kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield path


@pytest.fixture
def make_spawner(kubeconfig: Path, tmp_path: Path) -> Any:
    """Build a configured FacilitySpawner for a user, the way the hub would (same configure())."""
    from traitlets.config import Config

    from aifacility.spawner import FacilitySpawner, configure

    def build(user: HubUser, **user_options: Any) -> FacilitySpawner:
        c = Config()
        configure(c, load_facility(demo_facility_path()), facility_path=str(demo_facility_path()),
                  data_dir=str(tmp_path))
        spawner = FacilitySpawner(config=c, user=user, _mock=True)
        spawner.user_options = dict(user_options)
        return spawner

    return build
