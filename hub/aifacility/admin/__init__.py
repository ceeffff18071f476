"""The admin service: policies per group and per user over the facility file, with an audit trail."""

from aifacility.admin.config import configure

__all__ = ["configure"]
