"""The development cluster's Kueue: webhook, CRD validation, admission loop and visibility API."""

from aifacility.devcluster.kueue.controller import KueueController
from aifacility.devcluster.kueue.visibility import make_visibility_extension
from aifacility.devcluster.kueue.webhook import kueue_hook

__all__ = ["KueueController", "kueue_hook", "make_visibility_extension"]
