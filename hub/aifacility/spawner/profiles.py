"""Render the facility's profiles into KubeSpawner's `profile_list`, per user.

A facility profile is images x CPU/memory x (no accelerator | a GPU model | a MIG slice | an FPGA). Each one
becomes one KubeSpawner profile whose `kubespawner_override` asks for the accelerator's real extended resource,
selects its nodes and tolerates their taints; the image is a `profile_options` choice so the stock KubeSpawner
form and `user_options` handling keep working (`{"profile": "gpu-t4", "image": "ml"}`).

Only pure functions live here so rendering can be unit tested and benchmarked without a hub or a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aifacility.facility.model import Accelerator, Facility, Profile
from aifacility.facility.quantity import parse_quantity

# The user_options key of the queue checkbox (form field `profile-option-<slug>--queue`).
QUEUE_OPTION = "queue"
IMAGE_OPTION = "image"


class ProfileChoiceError(ValueError):
    """The requested profile or option is unknown or not open to this user; the message says what to do."""


def _shown(name: object, limit: int = 60) -> str:
    """A requested name for a message: never more than `limit` characters of it (a body may hold a huge one)."""
    text = str(name)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def visible_profiles(facility: Facility, groups: Iterable[str]) -> list[Profile]:
    """The profiles a member of `groups` may use, in the facility file's order."""
    member_of = set(groups)
    return [p for p in facility.profiles if not p.groups or member_of.intersection(p.groups)]


def _accelerator_overrides(acc: Accelerator, count: int) -> dict[str, Any]:
    units = str(count)
    return {
        # Limits and requests both: extended resources cannot be overcommitted, and Kueue counts requests.
        "extra_resource_limits": {acc.resource: units},
        "extra_resource_guarantees": {acc.resource: units},
        "node_selector": dict(acc.node_selector),
        "tolerations": [t.model_dump(exclude_none=True) for t in acc.tolerations],
    }


def profile_overrides(facility: Facility, profile: Profile) -> dict[str, Any]:
    """The KubeSpawner traits one facility profile sets (before the image choice)."""
    cpu = float(parse_quantity(profile.cpu))
    memory = int(parse_quantity(profile.memory))
    overrides: dict[str, Any] = {
        "cpu_guarantee": cpu,
        "cpu_limit": cpu,
        "mem_guarantee": memory,
        "mem_limit": memory,
        # Profiles are what a user chose; the label lets accounting and the admin pages find it on the pod.
        "extra_labels": {"aifacility.io/profile": profile.name},
    }
    if profile.accelerator:
        acc = facility.accelerator(profile.accelerator.name)
        overrides.update(_accelerator_overrides(acc, profile.accelerator.count))
        overrides["extra_labels"]["aifacility.io/accelerator"] = acc.name
    if profile.default_url:
        overrides["default_url"] = profile.default_url
    return overrides


@dataclass(frozen=True)
class AcceleratorInfo:
    """What the form shows about a profile's accelerator."""

    name: str
    kind: str
    display_name: str
    count: int
    memory: str | None
    free: int | None  # free units right now; None when availability is unknown
    total: int | None
    shared_by: int | None = None  # time-slicing: up to this many pods on one GPU; None: the GPU is the pod's alone


# The NVIDIA device plugin's label on a node whose GPUs it time-slices (`aifacility up --host-gpus --gpu-replicas`
# sets it as well): how many pods share each GPU.
REPLICAS_LABEL = "nvidia.com/gpu.replicas"


def time_sliced(facility: Facility, accelerator: str) -> int | None:
    """How many pods may share one GPU of `accelerator`, where a node that has it time-slices; else None."""
    replicas = [int(r) for n in facility.nodes if n.accelerators.get(accelerator)
                for r in [n.labels.get(REPLICAS_LABEL, "1")] if r.isdigit()]
    return max(replicas) if replicas and max(replicas) > 1 else None


def accelerator_info(facility: Facility, profile: Profile,
                     availability: Mapping[str, tuple[int, int]] | None) -> AcceleratorInfo | None:
    if not profile.accelerator:
        return None
    acc = facility.accelerator(profile.accelerator.name)
    free_total = (availability or {}).get(acc.name)
    return AcceleratorInfo(
        name=acc.name, kind=acc.kind, display_name=acc.display_name, count=profile.accelerator.count,
        memory=acc.memory, free=free_total[0] if free_total else None,
        total=free_total[1] if free_total else None, shared_by=time_sliced(facility, acc.name),
    )


def payers(profile: Profile, groups: Iterable[str]) -> list[str]:
    """The user's groups that may pay for a session of `profile`, in order of preference (see quotas.py)."""
    mine = set(groups)
    return [g for g in profile.groups if g in mine] if profile.groups else sorted(mine)


def render_profile(facility: Facility, profile: Profile,
                   availability: Mapping[str, tuple[int, int]] | None = None,
                   quota_left: int | None = None) -> dict[str, Any]:
    """One KubeSpawner profile dict for a facility profile."""
    images = {i.name: i for i in facility.images}
    choices = {
        name: {
            "display_name": images[name].display_name,
            "default": n == 0,
            "kubespawner_override": {"image": images[name].image},
        }
        for n, name in enumerate(profile.images)
    }
    info = accelerator_info(facility, profile, availability)
    return {
        "slug": profile.name,
        "display_name": profile.display_name,
        "description": profile.description,
        "default": profile.default,
        "kubespawner_override": profile_overrides(facility, profile),
        "profile_options": {IMAGE_OPTION: {"display_name": "Image", "choices": choices}},
        # Extra keys are ignored by KubeSpawner and read by our form template.
        "aifacility": {
            "accelerator": info.__dict__ if info else None,
            "queueable": profile.queueable,
            "cpu": profile.cpu,
            "memory": profile.memory,
            "lifetime_hours": profile.lifetime_hours,
            "groups": list(profile.groups),
            # accelerator units the user's quotas still allow for this profile (None: no limit applies)
            "quota_left": quota_left,
        },
    }


def render_profile_list(facility: Facility, groups: Iterable[str],
                        availability: Mapping[str, tuple[int, int]] | None = None,
                        quota_left: Callable[[Profile], int | None] | None = None) -> list[dict[str, Any]]:
    """KubeSpawner's `profile_list` for a user in `groups` (empty when nothing is open to them)."""
    return [render_profile(facility, p, availability, quota_left(p) if quota_left and p.accelerator else None)
            for p in visible_profiles(facility, groups)]


def check_choice(facility: Facility, username: str, groups: Iterable[str],
                 user_options: Mapping[str, Any]) -> Profile:
    """Validate `user_options` (from the form or a REST body) against what this user may use.

    Returns the chosen profile (the default one when none is named). Raises ProfileChoiceError with a message a
    person can act on: unknown profile, profile of a group the user is not in, unknown image, bad queue flag.
    """
    groups = sorted(set(groups))
    allowed = visible_profiles(facility, groups)
    if not allowed:
        raise ProfileChoiceError(
            f"No notebook profile is open to {username} (groups: {', '.join(groups) or 'none'}). "
            f"Ask {facility.iam.contact} to add you to a group of this facility.")
    allowed_names = [p.name for p in allowed]
    name = user_options.get("profile")
    if name is None or name == "":
        return next((p for p in allowed if p.default), allowed[0])
    if not isinstance(name, str):
        raise ProfileChoiceError(f"'profile' must be a profile name (a string), not {type(name).__name__}. "
                                 f"Choose one of: {', '.join(allowed_names)}.")
    try:
        profile = facility.profile(name)
    except KeyError:
        raise ProfileChoiceError(f"There is no profile '{_shown(name)}'. Choose one of: "
                                 f"{', '.join(allowed_names)}.") from None
    if profile.name not in allowed_names:
        raise ProfileChoiceError(
            f"The profile '{_shown(name)}' is only open to the group(s) {', '.join(profile.groups)}, and "
            f"{username} is in {', '.join(groups) or 'no group'}. Choose one of: {', '.join(allowed_names)}, "
            f"or ask {facility.iam.contact} for access.")
    image = user_options.get(IMAGE_OPTION)
    if image not in (None, "") and image not in profile.images:
        raise ProfileChoiceError(f"The profile '{name}' offers the image(s) {', '.join(profile.images)}, "
                                 f"not '{_shown(image)}'.")
    if wants_queue(user_options) and not profile.queueable:
        raise ProfileChoiceError(f"The profile '{name}' cannot wait in a queue; untick 'queue' or choose "
                                 "a profile with an accelerator that can be queued.")
    return profile


def wants_queue(user_options: Mapping[str, Any]) -> bool:
    """Whether the spawn asked to wait in the Kueue queue (form checkbox "on"/"true" or JSON true)."""
    value = user_options.get(QUEUE_OPTION)
    if isinstance(value, str):
        return value.strip().lower() in ("on", "true", "yes", "1")
    return value is True
