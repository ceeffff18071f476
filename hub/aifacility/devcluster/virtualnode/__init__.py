"""interLink virtual nodes: pods bound to them run as batch jobs through the interLink plugin contract."""

from aifacility.devcluster.virtualnode.controller import VirtualNodes, plugin_urls
from aifacility.devcluster.virtualnode.logs import InterLinkLogProvider
from aifacility.devcluster.virtualnode.provider import JOB_ID, InterLinkProvider

__all__ = ["JOB_ID", "InterLinkLogProvider", "InterLinkProvider", "VirtualNodes", "plugin_urls"]
