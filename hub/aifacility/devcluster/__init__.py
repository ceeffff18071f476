"""The development cluster: a small, faithful Kubernetes in one process (API server, scheduler, node agent,
Job controller, Kueue loop), for `aifacility up` and the tests. Never used in production."""

from aifacility.devcluster.cluster import CONTEXT, DevCluster

__all__ = ["CONTEXT", "DevCluster"]
