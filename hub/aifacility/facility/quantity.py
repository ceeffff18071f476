"""Kubernetes resource quantities ("500m", "4Gi", "2") as exact Decimals.

The parsing is the `kubernetes` client's own; this wrapper turns its errors into messages a person can act on.
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity as _parse


def parse_quantity(value: str | int | float) -> Decimal:
    try:
        return Decimal(_parse(value))
    except (ValueError, TypeError, ArithmeticError):
        raise ValueError(
            f"'{value}' is not a Kubernetes quantity (examples: 2, 500m, 4Gi, 1.5G)"
        ) from None
