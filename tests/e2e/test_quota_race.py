"""A quota race on the whole facility: 20 users who logged in through IAM ask at the same moment, through the REST
API, for the last 2 A100 MIG 1g.10gb slices. Exactly 2 start; the 18 others get a 4xx naming the limit; the
embedded cluster never holds more slices than the node has, and nothing is left behind for the refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests
import yaml

from support.facility import RunningFacility, start_facility, wait_for
from support.oidc_login import oidc_login
from support.podwatch import PodWatch, pod_units

pytestmark = pytest.mark.slow

NAMESPACE = "aifacility"
NODE = "gpu-a100-01"
RESOURCE = "nvidia.com/mig-1g.10gb"
PROFILE = {"profile": "mig-1g-10gb", "image": "ml"}
SLICES = 4  # on gpu-a100-01, and group ml's quota for the profile
STUDENTS = [f"student{i:02d}" for i in range(1, 23)]  # 22 accounts in group ml
HOLDERS, RACERS = STUDENTS[:2], STUDENTS[2:]  # 2 already hold slices, 20 race for the last 2


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFacility]:
    base = tmp_path_factory.mktemp("quota-race")
    users = base / "students.yaml"
    users.write_text(yaml.safe_dump([{"username": u, "groups": ["ml"]} for u in STUDENTS]))
    fac = start_facility(base, "--demo-users", str(users))
    yield fac
    code = fac.stop()
    assert code == 0, "".join(fac.output[-40:])



def _running(fac: RunningFacility, user: str) -> bool:
    return bool(fac.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("ready"))


def test_twenty_concurrent_spawns_for_the_last_two_slices(facility: RunningFacility) -> None:
    # The banner counts the extra accounts (its lines arrive through the output-draining thread).
    wait_for(lambda: "and 22 more from" in "".join(facility.output), timeout=10, what="the banner's account line")
    # The hub spawns only for users holding IAM tokens, so everyone logs in first, as a person would.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda u: oidc_login(facility.url, u), STUDENTS))
    for user in HOLDERS:
        r = facility.api("POST", f"/users/{user}/server", json=PROFILE)
        assert r.status_code in (201, 202), r.text
    wait_for(lambda: all(_running(facility, u) for u in HOLDERS), timeout=120, what="the two holders' servers")

    watcher = PodWatch(facility.kubeconfig, NAMESPACE, RESOURCE, NODE).start()
    gate = threading.Barrier(len(RACERS))

    def fire(user: str) -> requests.Response:
        gate.wait()  # all 20 requests leave together
        return facility.api("POST", f"/users/{user}/server", json=PROFILE)

    try:
        with ThreadPoolExecutor(len(RACERS)) as pool:
            answers = dict(zip(RACERS, pool.map(fire, RACERS), strict=True))
        winners = [u for u, r in answers.items() if r.status_code in (201, 202)]
        assert len(winners) == 2, {u: (r.status_code, r.text[:200]) for u, r in answers.items()}
        wait_for(lambda: all(_running(facility, u) for u in winners), timeout=120, what="the winners' servers")
    finally:
        watcher.stop()

    for user, r in answers.items():
        if user in winners:
            continue
        assert 400 <= r.status_code < 500, (user, r.status_code, r.text)
        message = r.json()["message"]
        assert "Quota reached: group 'ml' may use 4 A100 MIG 1g.10gb slice unit(s)" in message, message
        assert "Traceback" not in r.text
        assert facility.api("GET", f"/users/{user}").json()["servers"] == {}, user

    # Never more slices held than the node has: counted from every pod change, not from a snapshot.
    assert watcher.max_holders <= SLICES, watcher.max_holders
    assert watcher.max_on_node <= SLICES, watcher.max_on_node
    pods = [p for p in facility.core_api().list_namespaced_pod(NAMESPACE).items if pod_units(p, RESOURCE)]
    owners = sorted(p.metadata.labels["hub.jupyter.org/username"] for p in pods)
    assert owners == sorted([*HOLDERS, *winners])
    assert sum((pod_units(p, RESOURCE) for p in pods if p.spec.node_name == NODE), Decimal(0)) == SLICES
    # No pod was ever made for a refused request.
    refused_pods = {f"jupyter-{u}" for u in RACERS if u not in winners} & watcher.seen
    assert not refused_pods, refused_pods


def test_a_freed_slice_goes_to_the_next_request(facility: RunningFacility) -> None:
    """After the race: stopping one session frees its slice at once, and a refused student then gets it."""
    running = [u for u in STUDENTS if _running(facility, u)]
    assert len(running) == SLICES
    loser = next(u for u in RACERS if u not in running)
    r = facility.api("POST", f"/users/{loser}/server", json=PROFILE)
    assert r.status_code == 403, r.text
    assert facility.api("DELETE", f"/users/{running[0]}/server").status_code in (202, 204)
    wait_for(lambda: not facility.api("GET", f"/users/{running[0]}").json()["servers"], timeout=60,
             what="the stopped server to go")
    r = facility.api("POST", f"/users/{loser}/server", json=PROFILE)
    assert r.status_code in (201, 202), r.text
    wait_for(lambda: _running(facility, loser), timeout=120, what=f"{loser}'s server")

