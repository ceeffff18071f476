"""Kubernetes resource quantities ("500m", "2", "4Gi", "1e9") as numbers, and pod-level resource totals."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from .contract import Container, PodSpec
from .volumes import PodError

_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def parse_quantity(value: str | int | float, what: str) -> Decimal:
    m = _RE.match(str(value).strip())
    if not m:
        raise PodError(f"{what}: {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:
        raise PodError(f"{what}: {value!r} is not a Kubernetes quantity") from exc
    if number < 0:
        raise PodError(f"{what}: {value!r} must not be negative")
    return number * Decimal(_SUFFIX[m.group(2)])


def pod_resources(spec: PodSpec) -> dict[str, Decimal]:
    """What the pod needs at once: containers run in parallel (sum), init containers one by one (max).

    Limits win over requests, as the batch system must not let the job exceed what was asked.
    """
    def of(ctn_list: list[Container], combine: str) -> dict[str, Decimal]:
        acc: dict[str, Decimal] = {}
        for c in ctn_list:
            merged = {**c.resources.requests, **c.resources.limits}
            for name, raw in merged.items():
                q = parse_quantity(raw, f"container {c.name!r} resource {name}")
                acc[name] = acc.get(name, Decimal(0)) + q if combine == "sum" else max(acc.get(name, q), q)
        return acc

    total = of(spec.containers, "sum")
    for name, q in of(spec.initContainers or [], "max").items():
        total[name] = max(total.get(name, Decimal(0)), q)
    return total


def cpus(q: Decimal) -> int:
    return max(1, math.ceil(q))


def mebibytes(q: Decimal) -> int:
    return max(1, math.ceil(q / 2**20))


def count(q: Decimal, what: str) -> int:
    if q != q.to_integral_value():
        raise PodError(f"{what}: {q} must be a whole number")
    return int(q)
