"""A dask-gateway backend that runs each cluster as plain pods in the facility's namespace.

dask-gateway's `DBBackendBase` does the bookkeeping (its database, the reconcile loops, timeouts, scaling,
adaptive mode, the routes of its own proxy); a backend only says how to start, check and stop a scheduler and a
worker, as its jobqueue backends do. So this is what upstream's Kubernetes backend would be without its
controller and Traefik: the gateway talks to the API server itself, and its built-in proxy (the Go binary its
wheel ships) routes clients to schedulers by TLS SNI. The scheduler reports its address in its heartbeat to the
gateway (`dask_gateway.scheduler_preload`, with the cluster's token), so no Service per cluster is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dask_gateway_server.backends.base import ClusterConfig, PublicException
from dask_gateway_server.backends.db_base import DBBackendBase
from dask_gateway_server.traitlets import Command, Type
from traitlets import Any as AnyTrait
from traitlets import Integer, List, Unicode, default

from aifacility.dask import pods
from aifacility.dask.options import DaskRefused, check_cluster_count
from aifacility.facility.model import Facility
from aifacility.spawner.storage import Claims


class FacilityClusterConfig(ClusterConfig):
    """dask-gateway's per-cluster settings, plus what our options handler decides for the facility."""

    # `dask-scheduler` / `dask-worker` are gone from distributed; the `dask` command remains.
    scheduler_cmd = Command(["dask", "scheduler"], config=True)
    worker_cmd = Command(["dask", "worker"], config=True)
    image = Unicode(config=True, help="The container image of the scheduler and the workers.")
    group = Unicode(config=True, help="The group the cluster is charged to: its Kueue LocalQueue.")
    user_groups = List(Unicode(), config=True, help="The user's groups: the workers mount their directories.")
    accelerator_resource = Unicode("", config=True, help="The extended resource of one device per worker.")
    max_clusters_per_user = Integer(2, min=1, config=True)


class Kube:
    """The few API calls the backend makes, on the gateway's own identity (the hub's, in the facility)."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes_asyncio import client

        self.api, self.ns = api, namespace
        self.core = client.CoreV1Api(api)
        self._claims: Claims | None = None

    @classmethod
    async def connect(cls, namespace: str) -> Kube:
        from aifacility.jobs.cluster import api_client  # in a pod its service account, else the kubeconfig

        return cls(await api_client(), namespace)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        create = (self.core.create_namespaced_pod if body["kind"] == "Pod"
                  else self.core.create_namespaced_secret)
        sent: Any = body  # the typed API sends a dict body as it is
        created = await create(self.ns, sent, _request_timeout=30)
        return dict(self.api.sanitize_for_serialization(created))

    async def ensure_claims(self, facility: Facility, user: str, groups: list[str]) -> None:
        """The home and group claims a worker mounts: made here for a user who never started a session."""
        if self._claims is None:
            self._claims = Claims(self.core, self.ns, facility)
        await self._claims.ensure_all(pods.home_claim(user), user, groups)

    async def set_owner(self, secret: str, owner: list[dict[str, Any]]) -> None:
        await self.core.patch_namespaced_secret(secret, self.ns, {"metadata": {"ownerReferences": owner}},
                                                _request_timeout=30)

    async def delete(self, kind: str, name: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        delete = self.core.delete_namespaced_pod if kind == "Pod" else self.core.delete_namespaced_secret
        try:
            await delete(name, self.ns, _request_timeout=30)
        except ApiException as e:
            if e.status != 404:  # already gone is what we wanted
                raise

    async def delete_pods(self, selector: str) -> None:
        """Delete the pods the selector matches, one by one: the hub's role may delete pods, not collections."""
        found = await self.core.list_namespaced_pod(self.ns, label_selector=selector, _request_timeout=30)
        for pod in found.items:
            await self.delete("Pod", pod.metadata.name)

    async def phases(self, selector: str) -> dict[str, str]:
        """Pod name -> phase, for the pods the selector matches (one list call for all clusters)."""
        pods_ = await self.core.list_namespaced_pod(self.ns, label_selector=selector, _request_timeout=30)
        return {p.metadata.name: p.status.phase or "Pending" for p in pods_.items}

    async def close(self) -> None:
        await self.api.close()


def _selector(**labels: str) -> str:
    return ",".join(f"{k}={v}" for k, v in {**pods.MANAGED_BY, **labels}.items())


ALIVE = ("Pending", "Running")


class FacilityBackend(DBBackendBase):
    """Schedulers and workers as pods; see the module's docstring."""

    facility = AnyTrait(config=True, help="The aifacility Facility model this gateway serves.")
    kube = AnyTrait(help="A Kube (set in tests; connected at setup otherwise).")
    cluster_config_class = Type("aifacility.dask.backend.FacilityClusterConfig", klass=ClusterConfig,
                                config=True)
    # The kubelet expands $(POD_IP) in a command: the scheduler listens on, and reports, its pod's address.
    default_host = "$(POD_IP)"

    @default("facility")
    def _load_facility(self) -> Facility:
        from aifacility.facility import load_facility

        return load_facility()  # $AIFACILITY_FACILITY

    async def do_setup(self) -> None:
        if self.kube is None:
            self.kube = await Kube.connect(self.facility.namespace)

    async def do_cleanup(self) -> None:
        if self.kube is not None:
            await self.kube.close()

    async def process_cluster_options(self, user: Any, request: Any) -> Any:
        """The options handler decides everything but the user's count of clusters, which it cannot see: that is
        checked here. dask-gateway's start_cluster creates the record right after this returns, with no await in
        between, so in one gateway process two concurrent requests cannot both pass the check."""
        options, config = await super().process_cluster_options(user, request)
        active = [c for c in self.db.list_clusters(username=user.name) if c.config.get("group") == config.group]
        try:
            check_cluster_count(config.group, len(active), config.max_clusters_per_user)
        except DaskRefused as e:
            raise PublicException(str(e)) from None
        return options, config

    # --- what the pods are told ----------------------------------------------------------------------------

    def get_tls_paths(self, cluster: Any) -> tuple[str, str]:
        return pods.TLS_CERT, pods.TLS_KEY

    def get_env(self, cluster: Any) -> dict[str, str]:
        env: dict[str, str] = super().get_env(cluster)
        env["DASK_GATEWAY_API_TOKEN"] = pods.TOKEN  # a path: the preload reads the token from the Secret
        return env

    # --- the six operations DBBackendBase asks for -----------------------------------------------------------

    async def do_start_cluster(self, cluster: Any) -> AsyncIterator[dict[str, Any]]:
        cfg, fac = cluster.config, self.facility
        secret = pods.credentials_secret(fac, cluster.name, cluster.username, cfg["group"], cert=cluster.tls_cert,
                                         key=cluster.tls_key, token=cluster.token)
        await self.kube.create(secret)
        yield {"secret": secret["metadata"]["name"]}  # stopped even if what follows fails
        pod = await self.kube.create(pods.scheduler_pod(fac, cluster.name, cfg, cluster.username,
                                                        self.get_scheduler_command(cluster),
                                                        self.get_scheduler_env(cluster)))
        owner = pods.owned_by(pod)
        yield {"secret": secret["metadata"]["name"], "pod": pod["metadata"]["name"], "owner": owner}
        await self.kube.set_owner(secret["metadata"]["name"], owner)

    async def do_check_clusters(self, clusters: list[Any]) -> list[bool]:
        phases = await self.kube.phases(_selector(**{pods.ROLE_LABEL: "scheduler"})) if clusters else {}
        return [phases.get(pods.scheduler_name(c.name)) in ALIVE for c in clusters]

    async def do_stop_cluster(self, cluster: Any) -> None:
        # Workers left over (the gateway stops each one first), then the scheduler and its Secret: each step is
        # tried even if one before it failed, so that no scheduler pod outlives its cluster.
        errors = []
        for step in (lambda: self.kube.delete_pods(_selector(**{pods.CLUSTER_LABEL: cluster.name,
                                                                 pods.ROLE_LABEL: "worker"})),
                     lambda: self.kube.delete("Pod", pods.scheduler_name(cluster.name)),
                     lambda: self.kube.delete("Secret", pods.secret_name(cluster.name))):
            try:
                await step()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    async def do_start_worker(self, worker: Any) -> AsyncIterator[dict[str, Any]]:
        cluster = worker.cluster
        env = {**self.get_worker_env(cluster), "HOME": self.facility.storage.home_mount_path}
        await self.kube.ensure_claims(self.facility, cluster.username, list(cluster.config.get("user_groups") or []))
        body = pods.worker_pod(self.facility, cluster.name, worker.name, cluster.config, cluster.username,
                               self.get_worker_command(cluster, worker.name), env,
                               cluster.state.get("owner") or [])
        pod = await self.kube.create(body)
        yield {"pod": pod["metadata"]["name"]}

    async def do_check_workers(self, workers: list[Any]) -> list[bool]:
        # A worker gated by Kueue is Pending: alive, waiting for quota (worker_start_timeout bounds the wait).
        phases = await self.kube.phases(_selector(**{pods.ROLE_LABEL: "worker"})) if workers else {}
        return [phases.get(pods.worker_name(w.name)) in ALIVE for w in workers]

    async def do_stop_worker(self, worker: Any) -> None:
        await self.kube.delete("Pod", pods.worker_name(worker.name))
