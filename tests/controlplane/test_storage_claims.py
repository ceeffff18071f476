"""The claims a user's pods mount, made by whichever part of the facility starts one first (a job or a Dask
worker before any session): home, groups and datasets, with the hub's own identity, once each."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client, config

from aifacility.facility import load_facility
from aifacility.spawner.storage import STORAGE_LABEL, Claims
from support.controlplane import Cluster

NS = "aifacility"


async def test_claims_are_made_once_by_whoever_comes_first(cluster: Cluster) -> None:
    facility = load_facility(None)
    api = await config.new_client_from_config(config_file=str(cluster.embedded.hub_kubeconfig))
    try:
        # Two parts at once (the jobs service and the gateway, say): one creates, the other meets a 409.
        first, second = (Claims(client.CoreV1Api(api), NS, facility) for _ in range(2))
        await asyncio.gather(first.ensure_all("home-claimtest", "claimtest", ["ml"]),
                             second.ensure_all("home-claimtest", "claimtest", ["ml"]))
        home = cluster.get("pvc", "-n", NS, "home-claimtest")
        assert home["metadata"]["labels"][STORAGE_LABEL] == "home"
        assert home["spec"]["accessModes"] == ["ReadWriteMany"]
        assert home["spec"]["resources"]["requests"]["storage"] == facility.storage.home_size
        kinds = {p["metadata"]["name"]: p["metadata"]["labels"][STORAGE_LABEL]
                 for p in cluster.get("pvc", "-n", NS, "-l", STORAGE_LABEL)["items"]}
        assert kinds.get("group-ml") == "group", kinds

        # Known claims are not asked for again: a deleted one is not remade by the same process.
        cluster.kubectl("delete", "pvc", "-n", NS, "home-claimtest", "--wait=false")
        await first.ensure_all("home-claimtest", "claimtest", ["ml"])
        await asyncio.sleep(0.5)
        assert cluster.gone("pvc", NS, "home-claimtest") or cluster.get("pvc", "-n", NS, "home-claimtest")[
            "metadata"].get("deletionTimestamp")
    finally:
        await api.close()
        cluster.kubectl("delete", "pvc", "-n", NS, "home-claimtest", "--wait=false", "--ignore-not-found")
