"""The facility's `queues:` section: Kueue flavors, the cohort, per-group quotas and offload targets.

The Kueue objects themselves are rendered from this by `aifacility.kueue.render`; this module only states what a
site decides. Flavors are not listed here: one flavor per accelerator, a CPU flavor and one flavor per offload
target are derived from `accelerators:` and `nodes:` so that a site names each device once.

References to accelerators and nodes are checked against the rest of the facility file when it is loaded
(`QueuesField` below), so a typo fails at load time with the field's path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aifacility.facility.quantity import parse_quantity

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The taint interLink puts on its virtual nodes; a flavor for a virtual node carries it (see kueue spec §1.1).
INTERLINK_TAINT = "virtual-node.interlink/no-schedule"
# Where a node's pods run: `local` on the cluster's own nodes, the offload target's name on an interLink virtual
# node. Kueue matches a flavor's nodeLabels only on the keys the flavor names, so the CPU flavor carries
# `site: local` to be skipped for a job that selects an offload site (`aifacility jobs submit --offload hpc`).
SITE_LABEL = "aifacility.io/site"
LOCAL_SITE = "local"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _quantity(value: str | int | float) -> str:
    parse_quantity(value)  # raises ValueError with a readable message
    return str(value)


class OffloadTarget(_Strict):
    """An interLink virtual node that gets its own ResourceFlavor (named `name`, e.g. `hpc` or `htc`)."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    # The virtual node (a `nodes:` entry with `interlink:`); the flavor selects it by kubernetes.io/hostname.
    node: str
    # False: only pods that tolerate the interLink taint may use this flavor ("user-selective": the jobs client
    # adds the toleration when a user asks for offload). True: the flavor injects the toleration, so ordinary
    # jobs spill over to the remote site when local quota is used up ("automatic scheduling").
    spill: bool = False


class OffloadQuota(_Strict):
    cpu: str = "0"
    memory: str = "0"

    _q = field_validator("cpu", "memory", mode="before")(lambda cls, v: _quantity(v))


class GroupQueue(_Strict):
    """One facility group's ClusterQueue (named after the group) and LocalQueue (ditto, in the namespace)."""

    # Nominal quota on the CPU flavor.
    cpu: str = "0"
    memory: str = "0"
    # accelerator name -> devices of nominal quota. Absent: the group's `quotas.groups.<g>.accelerators`.
    accelerators: dict[str, int] | None = None
    # offload target name -> nominal quota on that target's flavor.
    offload: dict[str, OffloadQuota] = {}
    # How much more than its nominal quota the group may borrow from the cohort, per resource: keys are
    # `cpu`, `memory` or an accelerator name. A key that is absent means: unbounded (up to the cohort's unused
    # quota). `{}` everywhere with `borrowing: false` means: never borrow.
    borrowing_limit: dict[str, str] = {}
    borrowing: bool = True

    _q = field_validator("cpu", "memory", mode="before")(lambda cls, v: _quantity(v))

    @field_validator("accelerators")
    @classmethod
    def _non_negative(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for name, count in (v or {}).items():
            if count < 0:
                raise ValueError(f"accelerators.{name}: a quota cannot be negative ({count})")
        return v

    @field_validator("borrowing_limit")
    @classmethod
    def _limits(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: _quantity(q) for k, q in v.items()}


class Queues(_Strict):
    # Whether the facility uses Kueue at all (render() returns no objects when false).
    enabled: bool = True
    # The cohort every group's ClusterQueue joins, so that unused quota can be borrowed.
    cohort: str = Field(default="aifacility", pattern=DNS_LABEL, max_length=63)
    # The flavor for CPU and memory on local nodes (no node labels: any local node).
    cpu_flavor: str = Field(default="default", pattern=DNS_LABEL, max_length=63)
    queueing_strategy: Literal["BestEffortFIFO", "StrictFIFO"] = "BestEffortFIFO"
    offload: list[OffloadTarget] = []
    groups: dict[str, GroupQueue] = {}

    @field_validator("groups")
    @classmethod
    def _group_names(cls, v: dict[str, GroupQueue]) -> dict[str, GroupQueue]:
        for name in v:
            if not re.match(DNS_LABEL, name) or len(name) > 63:
                raise ValueError(f"groups.{name}: a group with a queue must have a DNS-label name "
                                 "(lower case letters, digits, '-'), as its ClusterQueue and LocalQueue do")
        return v

    def flavor_names(self, accelerators: list[str]) -> list[str]:
        return [self.cpu_flavor, *(t.name for t in self.offload), *accelerators]

    def site(self, node: str, virtual: bool) -> str:
        """The `aifacility.io/site` label of a node: its offload target's name, else `local` (a virtual node
        that no target names is its own site)."""
        target = next((t.name for t in self.offload if t.node == node), None)
        return target or (node if virtual else LOCAL_SITE)


def _check_references(queues: Queues, info: ValidationInfo) -> Queues:
    """Check `queues:` against the accelerators and nodes of the same facility file."""
    data: dict[str, Any] = info.data
    accels = {a.name for a in data.get("accelerators", [])}
    nodes = {n.name: n for n in data.get("nodes", [])}
    targets = {t.name for t in queues.offload}
    names = [queues.cpu_flavor, *(t.name for t in queues.offload), *sorted(accels)]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"the flavor name '{name}' is used twice (the CPU flavor, offload targets "
                             "and accelerators each get a ResourceFlavor of their own name)")
    for t in queues.offload:
        node = nodes.get(t.node)
        if node is None:
            raise ValueError(f"offload[{t.name}].node: unknown node '{t.node}'")
        if node.interlink is None:
            raise ValueError(f"offload[{t.name}].node: '{t.node}' is not an interLink virtual node "
                             "(it has no `interlink:` section)")
    for group, q in queues.groups.items():
        for a in q.accelerators or {}:
            if a not in accels:
                raise ValueError(f"groups.{group}.accelerators: unknown accelerator '{a}' "
                                 f"(known: {', '.join(sorted(accels)) or 'none'})")
        for target in q.offload:
            if target not in targets:
                raise ValueError(f"groups.{group}.offload: unknown offload target '{target}' "
                                 f"(known: {', '.join(sorted(targets)) or 'none'})")
        for k in q.borrowing_limit:
            if k not in ("cpu", "memory") and k not in accels:
                raise ValueError(f"groups.{group}.borrowing_limit: '{k}' is neither cpu, memory nor an "
                                 "accelerator name")
    return queues


# The type of `Facility.queues`: validated against its sibling fields (declared before it in `Facility`).
QueuesField = Annotated[Queues, AfterValidator(_check_references)]
