"""The development cluster's HTTP API server: the Kubernetes REST protocol over the object store."""

from .app import API_GROUPS_KEY, STORE_KEY, make_app, register_api_group

__all__ = ["API_GROUPS_KEY", "STORE_KEY", "make_app", "register_api_group"]
