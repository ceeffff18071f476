"""Kueue for the facility: the objects rendered from the facility file, and reading queue positions."""

from aifacility.kueue.positions import PendingWorkload, cluster_queue_positions, find_owner, local_queue_positions
from aifacility.kueue.render import render

__all__ = ["PendingWorkload", "cluster_queue_positions", "find_owner", "local_queue_positions", "render"]
