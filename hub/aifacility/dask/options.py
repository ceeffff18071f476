"""The rules a Dask cluster must pass before it exists: pure functions of the facility, the user and what they ask.

dask-gateway validates each option's type; everything that depends on the facility and the user (their groups,
a group's worker sizes and accelerators, how many clusters they already have) is decided here, and a refusal
says what to change. dask-gateway shows the message to the client as the reason of a 422 response, so messages
are one line. Kueue then admits each worker pod under the group's quota.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from aifacility.facility.model import Accelerator, DaskGroup, Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.kueue.render import group_accelerators
from aifacility.quotas.budgets import BudgetState

GIB = 2**30
# The `accelerator` option's value for a CPU-only worker.
NO_ACCELERATOR = "none"
# 0 in a size option means "the group's default": option defaults cannot depend on the group chosen in the same
# request, so `GatewayCluster()` sends 0 and gets the sizes of whichever group it is charged to.
GROUP_DEFAULT = 0


class DaskRefused(ValueError):
    """The request breaks a rule; the message is for the user."""


@dataclass(frozen=True)
class DaskPlan:
    """A cluster request resolved against the facility: every default filled in, every rule passed."""

    user: str
    group: str
    worker_cores: int
    worker_memory: int  # bytes
    accelerator: Accelerator | None  # one device per worker
    max_workers: int
    max_clusters: int  # per user, in this group
    user_groups: tuple[str, ...]  # for the storage mounts of the workers


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items)) or "none"


def dask_groups(facility: Facility, user_groups: Iterable[str]) -> list[str]:
    """The user's groups that may start Dask clusters: those with a Kueue queue (workers wait there)."""
    if not facility.dask.enabled:
        return []
    return sorted(set(user_groups) & set(facility.queues.groups))


def default_group(facility: Facility, groups: list[str]) -> str | None:
    """Where `GatewayCluster()` charges a cluster when the user names no group: never ambiguous, so that the
    simplest call works for a user in several groups too (the options form shows which group was chosen)."""
    for preferred in (facility.dask.default_group, facility.jobs.default_group):
        if preferred in groups:
            return preferred
    return groups[0] if groups else None


def worker_accelerators(facility: Facility, group: str) -> list[Accelerator]:
    """What a worker of `group` may ask for: the facility file's list, else the GPUs and MIG slices of the
    group's quota (an accelerator the group has no quota for would never be admitted)."""
    names = facility.dask.limits(group).accelerators
    if names is None:
        quota = group_accelerators(facility, group)
        return [a for a in facility.accelerators if a.kind in ("gpu", "mig") and quota.get(a.name, 0) > 0]
    return [facility.accelerator(n) for n in names]


def _cores(asked: int, limits: DaskGroup, group: str) -> int:
    if asked == GROUP_DEFAULT:
        return limits.worker_cores
    if asked < 1:
        raise DaskRefused("worker_cores must be at least 1 (or 0 for your group's default).")
    if asked > limits.max_worker_cores:
        raise DaskRefused(f"Group '{group}' allows at most {limits.max_worker_cores} cores per Dask worker; you "
                          f"asked for {asked}. Use more workers instead.")
    return asked


def _memory(asked_gib: float, limits: DaskGroup, group: str) -> int:
    if asked_gib == GROUP_DEFAULT:
        return int(parse_quantity(limits.worker_memory))
    if asked_gib < 0 or asked_gib != asked_gib:  # NaN
        raise DaskRefused("worker_memory is in GiB and must be more than 0 (or 0 for your group's default).")
    most = parse_quantity(limits.max_worker_memory)
    wanted = Decimal(str(asked_gib)) * GIB
    if wanted > most:
        raise DaskRefused(f"Group '{group}' allows at most {most / GIB:g} GiB per Dask worker; you asked for "
                          f"{asked_gib:g} GiB.")
    if wanted < 256 * 2**20:
        raise DaskRefused("A Dask worker needs at least 0.25 GiB of memory.")
    return int(wanted)


def plan(facility: Facility, user: str, user_groups: Iterable[str], *, group: str = "",
         worker_cores: int = GROUP_DEFAULT, worker_memory: float = GROUP_DEFAULT,
         accelerator: str = NO_ACCELERATOR) -> DaskPlan:
    """Resolve and check a cluster request (`group` "" = the default group); DaskRefused says why not."""
    user_groups = tuple(sorted(set(user_groups)))
    allowed = dask_groups(facility, user_groups)
    if not facility.dask.enabled:
        raise DaskRefused("Dask clusters are not enabled at this facility.")
    if not allowed:
        raise DaskRefused("None of your groups may start Dask clusters here (a group needs a queue at this "
                          f"facility); ask {facility.iam.contact} to add your group.")
    chosen = group or default_group(facility, allowed)
    if chosen not in allowed:
        raise DaskRefused(f"You cannot charge Dask clusters to group '{chosen}'; your groups that may are "
                          f"{_names(allowed)}.")
    assert chosen is not None
    limits = facility.dask.limits(chosen)
    accel = None
    if accelerator != NO_ACCELERATOR:
        usable = {a.name: a for a in worker_accelerators(facility, chosen)}
        if accelerator not in usable:
            raise DaskRefused(f"Dask workers of group '{chosen}' may not use '{accelerator}'; they may use: "
                              f"{_names(usable)}.")
        accel = usable[accelerator]
    return DaskPlan(user=user, group=chosen, worker_cores=_cores(worker_cores, limits, chosen),
                    worker_memory=_memory(worker_memory, limits, chosen), accelerator=accel,
                    max_workers=limits.max_workers, max_clusters=limits.max_clusters_per_user,
                    user_groups=user_groups)


def check_cluster_count(group: str, active: int, most: int) -> None:
    """At most `most` unfinished clusters per user and group; dask-gateway itself has no per-user limit."""
    if active >= most:
        raise DaskRefused(f"You already have {active} Dask cluster(s) charged to group '{group}', the most it "
                          "allows per user: shut one down (cluster.shutdown(), or Gateway().list_clusters() to "
                          "find them) or let it stop when idle.")


def check_budgets(used_up: Iterable[BudgetState], accelerator: Accelerator | None) -> None:
    """A used-up budget (the user's or the charged group's, admin service) closes new clusters as it closes new
    jobs: every cluster under `hold` and `stop`, clusters with accelerator workers under `cpu-only`."""
    for state in used_up:
        if state.on_exhausted in ("hold", "stop"):
            raise DaskRefused(state.refusal("new Dask clusters"))
        if accelerator is not None:
            raise DaskRefused(state.refusal("Dask clusters with GPU or MIG workers"))
