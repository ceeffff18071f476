"""Policies: the limits an admin sets for a group or a user, over what the facility file says.

A policy names only what it changes; everything it leaves out keeps the facility file's value, so deleting a
policy gives the file back. Accelerator limits are per accelerator name, which covers GPU models, MIG profiles
and FPGAs alike (`mig-1g-10gb: 2` is two 1g.10gb slices at once).

For a group:
- `servers`, `accelerators`: what its members may run at once through the spawner (`quotas.groups.<g>`);
- `queue_accelerators`, `queue_cpu`, `queue_memory`, `borrowing`: its Kueue ClusterQueue's nominal quota and
  whether it may borrow from the cohort (`queues.groups.<g>`), for groups with a queue. A group whose file sets
  no queue accelerators has its spawn limits as nominal quota, so lowering `accelerators` lowers both.
For a user: `servers`, `accelerators` (`quotas.users.<u>`, over `quotas.default_user`).

`effective(facility, policies)` is the facility with every policy applied: the spawner's limits, the jobs
service's checks and the ClusterQueues are all read from it, so the three never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aifacility.facility.model import Facility, Limits
from aifacility.facility.quantity import parse_quantity

Scope = Literal["group", "user"]
SCOPES: tuple[Scope, ...] = ("group", "user")
MAX_UNITS = 100_000  # more than any site has: a typo (an extra 0) is still caught by what the site has
Units = Annotated[int, Field(ge=0, le=MAX_UNITS, strict=True)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"  # hub user and group names as IAM gives them


class PolicyError(ValueError):
    """A policy that cannot be saved; the message says what to change."""


Hours = Annotated[float, Field(ge=0, le=10_000_000, allow_inf_nan=False)]


class Budget(BaseModel):
    """Hours per period, from the accounting ledger, enforced while work runs (aifacility.admin.budgets).

    GPU-hours are GPU-equivalent hours: a whole GPU counts 1 per hour, a MIG slice its fraction of a GPU (the
    accounting settings' MIG weighting); FPGAs are not counted. CPU-hours are core-hours. At 80% the user is
    told; at 100% `on_exhausted` applies until the budget is raised or the period rolls over:
    - `cpu-only`: no new accelerator sessions or accelerator jobs; what runs goes on;
    - `hold`: that, and the queued jobs are held (a group's ClusterQueue stops admitting, a user's pending
      Workloads are deactivated) and new jobs are refused;
    - `stop`: that, and running accelerator sessions are stopped after `grace_minutes`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_hours: Hours | None = None
    cpu_hours: Hours | None = None
    period: Literal["day", "week", "month"] = "month"
    on_exhausted: Literal["cpu-only", "hold", "stop"] = "hold"
    grace_minutes: float = Field(default=15, ge=0, le=7 * 24 * 60, allow_inf_nan=False)


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: Units | None = None
    accelerators: dict[str, Units] = Field(default_factory=dict, max_length=256)
    budget: Budget | None = None

    def is_empty(self) -> bool:
        return not self.model_dump(exclude_defaults=True)


class UserPolicy(_Policy):
    pass


class GroupPolicy(_Policy):
    queue_accelerators: dict[str, Units] = Field(default_factory=dict, max_length=256)
    queue_cpu: str | None = Field(default=None, max_length=32)
    queue_memory: str | None = Field(default=None, max_length=32)
    borrowing: bool | None = None

    @field_validator("queue_cpu", "queue_memory", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError("must be a quantity such as 32 or 128Gi")
        if parse_quantity(v) < 0:
            raise ValueError("cannot be negative")
        return str(v)


def parse_policy(scope: Scope, body: Any) -> GroupPolicy | UserPolicy:
    """A policy from a request body (a JSON object); PolicyError listing every problem otherwise."""
    model = GroupPolicy if scope == "group" else UserPolicy
    if not isinstance(body, dict):
        raise PolicyError(f"A {scope} policy is a JSON object such as {{\"servers\": 2, \"accelerators\": "
                          "{\"t4\": 1}}.")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise PolicyError("; ".join(_problem(err, model) for err in e.errors()[:10])) from None


def _problem(err: Any, model: type[_Policy]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "policy"
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        message = f"is not a policy field (the fields are: {', '.join(model.model_fields)})"
    return f"{where}: {message}"


@dataclass(frozen=True)
class Policies:
    """Every policy in force, as one consistent snapshot (see store.PolicyStore.snapshot)."""

    groups: dict[str, GroupPolicy] = field(default_factory=dict)
    users: dict[str, UserPolicy] = field(default_factory=dict)

    def get(self, scope: Scope, name: str) -> GroupPolicy | UserPolicy | None:
        return (self.groups if scope == "group" else self.users).get(name)

    def replace(self, scope: Scope, name: str, policy: GroupPolicy | UserPolicy | None) -> Policies:
        """These policies with `name`'s replaced (None or an empty policy: removed)."""
        groups, users = dict(self.groups), dict(self.users)
        table: dict[str, Any] = groups if scope == "group" else users
        if policy is None or policy.is_empty():
            table.pop(name, None)
        else:
            table[name] = policy
        return Policies(groups, users)


def _limits(base: Limits, policy: _Policy | None) -> Limits:
    if policy is None:
        return base
    return Limits(servers=base.servers if policy.servers is None else policy.servers,
                  accelerators={**base.accelerators, **policy.accelerators})


def group_limits(facility: Facility, policies: Policies, group: str) -> Limits | None:
    base = facility.quotas.groups.get(group)
    policy = policies.groups.get(group)
    if base is None and (policy is None or (policy.servers is None and not policy.accelerators)):
        return None  # no limit at the group level, as the file says
    return _limits(base or Limits(), policy)


def user_limits(facility: Facility, policies: Policies, user: str) -> Limits:
    return _limits(facility.quotas.users.get(user, facility.quotas.default_user), policies.users.get(user))


def effective(facility: Facility, policies: Policies) -> Facility:
    """The facility with every policy applied. Not validated again (fast enough for every request): `check`
    validated each policy against the file when it was saved."""
    if not policies.groups and not policies.users:
        return facility
    groups = dict(facility.quotas.groups)
    for g in policies.groups:
        lim = group_limits(facility, policies, g)
        if lim is not None:
            groups[g] = lim
    users = dict(facility.quotas.users)
    for u in policies.users:
        users[u] = user_limits(facility, policies, u)
    quotas = facility.quotas.model_copy(update={"groups": groups, "users": users})
    queue_groups = dict(facility.queues.groups)
    for g, p in policies.groups.items():
        gq = queue_groups.get(g)
        if gq is None:
            continue
        update: dict[str, Any] = {}
        if p.queue_accelerators:
            own = gq.accelerators if gq.accelerators is not None else groups.get(g, Limits()).accelerators
            update["accelerators"] = {**own, **p.queue_accelerators}
        for key, value in (("cpu", p.queue_cpu), ("memory", p.queue_memory), ("borrowing", p.borrowing)):
            if value is not None:
                update[key] = value
        if update:
            queue_groups[g] = gq.model_copy(update=update)
    queues = facility.queues.model_copy(update={"groups": queue_groups})
    return facility.model_copy(update={"quotas": quotas, "queues": queues})


def known_groups(facility: Facility) -> set[str]:
    """Every group the facility file names."""
    names = {*facility.quotas.groups, *facility.queues.groups, *facility.iam.allowed_groups,
             *facility.iam.admin_groups, *facility.dask.groups}
    for p in facility.profiles:
        names.update(p.groups)
    for d in facility.storage.datasets:
        names.update(d.groups)
    return names


def check(facility: Facility, scope: Scope, name: str, policy: GroupPolicy | UserPolicy) -> None:
    """PolicyError when `policy` cannot apply to this facility: unknown accelerators, queue fields for a group
    without a queue, or anything the facility file's own rules refuse once it is applied."""
    accelerators = {a.name for a in facility.accelerators}
    fields = [("accelerators", policy.accelerators)]
    if isinstance(policy, GroupPolicy):
        fields.append(("queue_accelerators", policy.queue_accelerators))
        queue_fields = policy.model_dump(include={"queue_accelerators", "queue_cpu", "queue_memory", "borrowing"},
                                         exclude_defaults=True)
        if queue_fields and name not in facility.queues.groups:
            raise PolicyError(
                f"Group '{name}' has no Kueue queue, so {', '.join(sorted(queue_fields))} cannot apply to it; "
                f"the groups with a queue are: {', '.join(sorted(facility.queues.groups)) or 'none'}.")
    if policy.budget is not None and policy.budget.gpu_hours is None and policy.budget.cpu_hours is None:
        raise PolicyError("budget: set gpu_hours, cpu_hours or both (hours per period).")
    for what, values in fields:
        unknown = sorted(set(values) - accelerators)
        if unknown:
            raise PolicyError(f"{what}: unknown accelerator {', '.join(repr(u) for u in unknown)} (the facility's "
                              f"accelerators are: {', '.join(sorted(accelerators)) or 'none'}).")
    applied = effective(facility, Policies().replace(scope, name, policy))
    try:
        Facility.model_validate(applied.model_dump())
    except ValidationError as e:
        raise PolicyError("; ".join(str(err["msg"]) for err in e.errors()[:5])) from None


class PolicyLimits:
    """The spawner's LimitsSource (quotas.reservations) over one snapshot of the policies."""

    def __init__(self, facility: Facility, policies: Policies) -> None:
        self.facility = facility
        self.policies = policies

    def user_limits(self, user: str) -> Limits:
        return user_limits(self.facility, self.policies, user)

    def group_limits(self, group: str) -> Limits | None:
        return group_limits(self.facility, self.policies, group)
