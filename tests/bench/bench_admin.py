"""An admin's policy change until it takes effect, on the running embedded facility: `PUT` of physics' policy
through the proxy (the admin service checks it, patches the group's ClusterQueue, commits the policy and its audit
row), then bob's next spawn, which the new limit refuses, and physics' ClusterQueue, read right after the answer.

Baselines in the same run, alternating: the same refused spawn with no change before it, and the same quota
written to the ClusterQueue directly with the `kubernetes` client as a cluster admin (the API server's and
Kueue's webhook's own cost). Run: `make bench ARGS=admin`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aifacility.kueue.api import KUEUE_GROUP, KUEUE_VERSION
from support.facility import start_facility
from support.oidc_login import oidc_login
from support.queues import nominal_quota

ROUNDS = 20
# Two policies that each refuse bob's T4 spawn, with messages that say which one is in force.
POLICIES = [({"accelerators": {"t4": 0}}, "may use 0 NVIDIA Tesla T4"), ({"servers": 0}, "may run 0 server(s)")]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        fac = start_facility(Path(tmp) / "facility")
        try:
            oidc_login(fac.url, "bob")  # bob is in physics, with IAM tokens to spawn with
            ops = {"Authorization": f"token {fac.admin_token}"}
            policy_url = f"{fac.url}/services/admin/api/groups/physics"
            custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(fac.kubeconfig)))

            def spawn_refused(needle: str) -> float:
                t0 = time.perf_counter()
                r = fac.api("POST", "/users/bob/server", json={"profile": "gpu-t4"})
                took = time.perf_counter() - t0
                assert r.status_code == 403 and needle in r.text, r.text
                return took

            def queue() -> dict[str, Any]:
                cq: dict[str, Any] = custom.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues",
                                                                      "physics")
                return cq

            change, effect, refused_alone, direct = [], [], [], []
            for i in range(ROUNDS + 1):
                body, needle = POLICIES[i % 2]
                t0 = time.perf_counter()
                r = requests.put(policy_url, json=body, headers=ops, timeout=60)
                put = time.perf_counter() - t0
                assert r.status_code == 200 and r.json()["change"], r.text
                next_spawn = spawn_refused(needle)
                assert nominal_quota(queue(), "t4") == ("0" if i % 2 == 0 else "4")  # written before the answer
                alone = spawn_refused(needle)
                # The same quota change straight to the API server, then back to what the policy says.
                cq = queue()
                t0 = time.perf_counter()
                rgs = cq["spec"]["resourceGroups"]
                custom.patch_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", "physics",
                                                   {"spec": {"resourceGroups": rgs}})
                raw = time.perf_counter() - t0
                if i:  # the first round warms every path up
                    change.append(put)
                    effect.append(put + next_spawn)
                    refused_alone.append(alone)
                    direct.append(raw)
            requests.delete(policy_url, headers=ops, timeout=60)
        finally:
            fac.stop()
    m = statistics.median
    print(f"rounds: {ROUNDS} (medians; each change alternates between two policies that refuse bob's T4 spawn)")
    print(f"policy change until the next spawn obeys it:   {ms(m(effect))}   "
          f"(the change alone: {ms(m(change))})")
    print(f"  baseline, the same refused spawn, no change: {ms(m(refused_alone))}   "
          f"ratio {m(effect) / m(refused_alone):5.2f}x")
    print(f"policy change until physics' ClusterQueue has it: {ms(m(change))}   (in force when the PUT answers)")
    print(f"  baseline, the same patch as a cluster admin:   {ms(m(direct))}   ratio {m(change) / m(direct):5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
