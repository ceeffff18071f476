"""The rules a job must pass before it exists: pure functions of the facility, the user and the request.

Everything the form, the CLI or a hand-written REST call could get wrong is refused here with a message that
says what to change; nothing is created for a refused job. Kueue then decides when an accepted job runs, under
its group's quota.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aifacility.facility.model import Accelerator, Facility
from aifacility.facility.quantity import parse_quantity
from aifacility.jobs.request import JobRequest
from aifacility.kueue.render import group_accelerators


class JobRefused(ValueError):
    """The request breaks a rule; the message is for the user."""


@dataclass(frozen=True)
class JobPlan:
    """A request resolved against the facility: every default filled in, every rule passed."""

    user: str
    group: str
    kind: str  # "job" or "notebook"
    image: str  # the facility's image name
    command: tuple[str, ...]
    cpu: str
    memory: str
    accelerator: Accelerator | None
    accelerator_count: int
    offload: str | None
    seconds: int  # the wall-time cap
    notebook: str | None = None  # relative to the home
    output_notebook: str | None = None


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items)) or "none"


def choose_group(facility: Facility, user_groups: Iterable[str], asked: str | None) -> str:
    with_queue = sorted(g for g in set(user_groups) if g in facility.queues.groups)
    if asked is not None:
        if asked not in with_queue:
            raise JobRefused(f"You cannot charge jobs to group '{asked}': your groups with a job queue are "
                             f"{_names(with_queue)}.")
        return asked
    if not with_queue:
        raise JobRefused("None of your groups has a job queue at this facility; ask the administrators to add "
                         "your group to it.")
    default = facility.jobs.default_group
    if default in with_queue:
        return str(default)
    if len(with_queue) > 1:
        raise JobRefused(f"You are in several groups with a job queue ({_names(with_queue)}): choose one with "
                         "--group.")
    return with_queue[0]


def options(facility: Facility, user_groups: Iterable[str]) -> dict[str, Any]:
    """What a submission form may offer this user: their groups with a job queue (the default first), the
    offload targets, and per group the accelerators its jobs may use (kind, name and what to call it)."""
    with_queue = sorted(g for g in set(user_groups) if g in facility.queues.groups)
    default = facility.jobs.default_group
    if default in with_queue:
        with_queue.remove(default)
        with_queue.insert(0, str(default))
    accelerators = {}
    for group in with_queue:
        owned = {a for a, n in group_accelerators(facility, group).items() if n > 0}
        accelerators[group] = [
            {"kind": a.kind, "name": a.name, "label": a.display_name} for a in facility.accelerators if a.name in owned]
    return {"groups": with_queue, "offload": [t.name for t in facility.queues.offload],
            "images": [i.name for i in facility.images], "accelerators": accelerators}


def find_accelerator(facility: Facility, kind: str, name: str) -> Accelerator:
    """An accelerator of `kind` by its name in the facility file or, for a MIG slice, its profile (1g.10gb)."""
    of_kind = [a for a in facility.accelerators if a.kind == kind]
    for a in of_kind:
        if name in (a.name, a.resource.rsplit("/", 1)[-1].removeprefix("mig-")):
            return a
    raise JobRefused(f"There is no {kind.upper()} '{name}' at this facility; the {kind.upper()}s are: "
                     f"{_names(a.name for a in of_kind)}.")


def _bounded(value: str, what: str, most: str) -> str:
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise JobRefused(f"{what} '{value[:40]}' is not a quantity (e.g. {'2' if what == 'cpu' else '8Gi'}).")\
            from None
    if amount <= 0:
        raise JobRefused(f"{what} must be more than 0.")
    if amount > parse_quantity(most):
        raise JobRefused(f"{what} '{value}' is more than a job may ask for ({most}).")
    return value


def _notebook_paths(path: str, job_name: str) -> tuple[str, str]:
    clean = posixpath.normpath(path)
    if path.startswith("/") or clean.startswith("..") or "\0" in path:
        raise JobRefused(f"The notebook must be a path inside your home directory, not '{path[:200]}'.")
    if not clean.endswith(".ipynb"):
        raise JobRefused(f"'{path[:200]}' is not a notebook (.ipynb).")
    return clean, f"{clean.removesuffix('.ipynb')}.{job_name}.ipynb"


def plan(facility: Facility, user: str, user_groups: Iterable[str], req: JobRequest, job_name: str) -> JobPlan:
    """Resolve and check a request; JobRefused with the reason when a rule is broken."""
    jobs = facility.jobs
    group = choose_group(facility, user_groups, req.group)

    images = {i.name for i in facility.images}
    image = req.image or jobs.default_image or facility.images[0].name
    if image not in images:
        raise JobRefused(f"Image '{image}' is not one of the facility's images: {_names(images)}.")

    accel, count = None, 0
    if req.accelerator is not None:
        accel = find_accelerator(facility, req.accelerator.kind, req.accelerator.name)
        owned = {a: n for a, n in group_accelerators(facility, group).items() if n > 0}
        quota = owned.get(accel.name, 0)
        if quota <= 0:
            raise JobRefused(f"Group '{group}' may not use {accel.display_name} ({accel.name}) for jobs; its "
                             f"accelerators are: {_names(owned)}.")
        count = req.accelerator.count
        if count > quota:
            raise JobRefused(f"{count} x {accel.name} is more than group '{group}' has ({quota}); such a job "
                             "would never start.")

    offload = req.offload
    if offload is not None:
        targets = {t.name for t in facility.queues.offload}
        if offload not in targets:
            raise JobRefused(f"There is no offload target '{offload}'; the targets are: {_names(targets)}.")
        if accel is not None:
            raise JobRefused(f"Offload target '{offload}' has no {accel.kind.upper()}s in this facility's queues: "
                             "run accelerator jobs locally.")
        if req.notebook is not None:
            raise JobRefused(f"Notebook jobs read and write your home directory, which offload target "
                             f"'{offload}' does not have: run notebooks locally, or offload a command.")

    if req.hours is None:
        hours = jobs.default_hours
    elif isinstance(req.hours, bool) or not math.isfinite(req.hours) or req.hours <= 0:
        raise JobRefused("The time limit must be a positive number of hours.")
    elif req.hours > jobs.max_hours:
        raise JobRefused(f"The time limit {req.hours:g} h is more than jobs may run here ({jobs.max_hours:g} h).")
    else:
        hours = req.hours
    seconds = max(1, math.ceil(hours * 3600))

    cpu = _bounded(req.cpu or jobs.cpu, "cpu", jobs.max_cpu)
    memory = _bounded(req.memory or jobs.memory, "memory", jobs.max_memory)

    notebook = output = None
    if req.notebook is not None:
        notebook, output = _notebook_paths(req.notebook, job_name)
        command: tuple[str, ...] = ()
        kind = "notebook"
    else:
        command = tuple(req.command or ())
        kind = "job"
    return JobPlan(user=user, group=group, kind=kind, image=image, command=command, cpu=cpu, memory=memory,
                   accelerator=accel, accelerator_count=count, offload=offload, seconds=seconds,
                   notebook=notebook, output_notebook=output)
