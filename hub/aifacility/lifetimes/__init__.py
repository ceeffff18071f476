"""Session lifetimes: a lifetime per profile, user extensions up to a cap, idle culling of accelerator sessions,
and warnings before either happens. `configure(c, facility)` wires it into the hub."""

from aifacility.lifetimes.config import configure

__all__ = ["configure"]
