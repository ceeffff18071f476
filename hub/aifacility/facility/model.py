"""The facility description: one YAML file holds everything a site decides.

The models are pydantic (strict: unknown keys are errors) so that a typo in `facility.yaml` is reported with
the field's path instead of being silently ignored. The JSON schema of the file is `Facility.model_json_schema()`
(written to `docs/facility.schema.json` by `aifacility schema`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aifacility.facility.quantity import parse_quantity
from aifacility.facility.queues import Queues, QueuesField

# Kubernetes names: DNS-1123 labels for most objects; extended resource names are `domain/name`.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RESOURCE_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_quantity(value: str | int | float) -> str:
    parse_quantity(value)  # raises ValueError with a readable message
    return str(value)


class Taint(Strict):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Accelerator(Strict):
    """A kind of device a notebook or job can ask for: a whole GPU, a MIG slice or an FPGA."""

    name: str = Field(pattern=DNS_LABEL)
    kind: Literal["gpu", "mig", "fpga"]
    display_name: str
    # The extended resource the device plugin advertises: nvidia.com/gpu, nvidia.com/mig-1g.10gb, ...
    resource: str = Field(pattern=RESOURCE_NAME)
    # Node labels a pod asking for this accelerator must select (GPU operator / FPGA plugin labels).
    node_selector: dict[str, str] = {}
    # Tolerations real clusters need for the tainted accelerator nodes.
    tolerations: list[Toleration] = []
    memory: str | None = None  # device memory, for display

    @field_validator("resource")
    @classmethod
    def _extended(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"'{v}' is not an extended resource name (expected e.g. nvidia.com/gpu)")
        return v


class InterLinkTarget(Strict):
    """How a virtual node reaches its interLink plugin."""

    backend: Literal["slurm", "htcondor"]
    # Where the plugin listens; filled in by `aifacility up` for the embedded plugin.
    url: str | None = None
    partition: str | None = None


class Node(Strict):
    name: str = Field(pattern=DNS_LABEL)
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    labels: dict[str, str] = {}
    taints: list[Taint] = []
    # accelerator name -> number of units on this node
    accelerators: dict[str, int] = {}
    # Set for interLink virtual nodes: their pods are forwarded to a plugin instead of run locally.
    interlink: InterLinkTarget | None = None

    _q = field_validator("cpu", "memory", mode="before")(lambda cls, v: _check_quantity(v))


class Image(Strict):
    name: str = Field(pattern=DNS_LABEL)
    display_name: str
    image: str
    description: str = ""
    # The image's ENTRYPOINT and CMD, as its Dockerfile sets them: the embedded facility's node agent runs no
    # images, so it runs a container without `command` (KubeSpawner's pods) the way the image would.
    entrypoint: list[str] = Field(default_factory=list, max_length=64)
    cmd: list[str] = Field(default_factory=list, max_length=64)


class AcceleratorRequest(Strict):
    name: str
    count: int = Field(default=1, ge=1)


class Profile(Strict):
    name: str = Field(pattern=DNS_LABEL)
    display_name: str
    description: str = ""
    images: list[str] = Field(min_length=1)
    cpu: str = "1"
    memory: str = "4Gi"
    accelerator: AcceleratorRequest | None = None
    # Groups that see and may use this profile; empty means every allowed user.
    groups: list[str] = []
    default: bool = False
    # Session lifetime, and how far a user may extend it (hours).
    lifetime_hours: float = Field(default=12, gt=0)
    max_lifetime_hours: float = Field(default=72, gt=0)
    # An idle session is stopped after this many minutes; unset means `sessions.accelerator_idle_timeout_minutes`
    # for profiles with an accelerator (idle GPUs are the scarce thing) and no idle culling for CPU profiles.
    idle_timeout_minutes: float | None = Field(default=None, gt=0)
    # Whether a spawn may wait in the Kueue queue when the accelerator is busy or over quota.
    queueable: bool = False
    # Where JupyterLab opens, relative to the server (e.g. an nbgitpuller link that pulls teaching material).
    default_url: str | None = Field(default=None, max_length=2048)

    _q = field_validator("cpu", "memory", mode="before")(lambda cls, v: _check_quantity(v))

    @model_validator(mode="after")
    def _lifetimes(self) -> Profile:
        if self.max_lifetime_hours < self.lifetime_hours:
            raise ValueError("max_lifetime_hours must be at least lifetime_hours")
        return self


class Dataset(Strict):
    name: str = Field(pattern=DNS_LABEL)
    mount_path: str
    read_only: bool = True
    groups: list[str] = []


class Storage(Strict):
    storage_class: str = "nfs-rwx"
    home_mount_path: str = "/home/jovyan"
    home_size: str = "20Gi"
    group_mount_root: str = "/shared/groups"
    # Size of each group's shared claim `group-<group>` (created by the spawner when missing).
    group_size: str = "100Gi"
    # Size requested when a dataset claim `dataset-<name>` is missing and the spawner creates it empty.
    dataset_size: str = "100Gi"
    datasets: list[Dataset] = []
    shm_size: str = "2Gi"


class IAM(Strict):
    issuer: str = ""
    client_id: str = "aifacility"
    scopes: list[str] = ["openid", "profile", "email", "offline_access", "wlcg.groups"]
    username_claim: str = "preferred_username"
    groups_claims: list[str] = ["groups", "wlcg.groups"]
    # Removed from the front of group names: WLCG groups are paths ("/physics" is the hub group "physics").
    group_prefix: str = "/"
    allowed_groups: list[str] = []
    admin_groups: list[str] = []
    # Members may run events (hackathons, schools) in the admin service: their own, not the policies.
    organiser_groups: list[str] = []
    contact: str = "the facility administrators"
    # Seconds an access token must still be valid for; the hub renews it (refresh token) below this.
    token_min_lifetime: int = Field(default=120, ge=0)


class Limits(Strict):
    """Concurrent limits for a group or a user. Absent keys mean: no limit at this level."""

    servers: int | None = Field(default=None, ge=0)
    # accelerator name -> maximum units in use at once
    accelerators: dict[str, int] = {}


class Quotas(Strict):
    default_user: Limits = Limits(servers=1)
    groups: dict[str, Limits] = {}
    users: dict[str, Limits] = {}


class Sessions(Strict):
    """Site policy for session lifetimes and idle culling (enforced by aifacility.lifetimes)."""

    # Users see a warning (hub pages, the session) this long before their session is stopped.
    warn_before_minutes: float = Field(default=15, gt=0)
    # The most a single "Extend" adds; the total stays capped by the profile's max_lifetime_hours.
    extend_step_hours: float = Field(default=4, gt=0)
    # Idle timeout of accelerator profiles that set no idle_timeout_minutes of their own.
    accelerator_idle_timeout_minutes: float = Field(default=60, gt=0)
    # How often expired and idle sessions are looked for.
    check_every_seconds: int = Field(default=60, ge=1)


class Jobs(Strict):
    """Batch and notebook jobs submitted from sessions through the jobs service (aifacility.jobs)."""

    # The image of a job that names none: the first of `images:` when unset.
    default_image: str | None = None
    # The group a job is charged to when the user names none and is in several groups with a queue.
    default_group: str | None = None
    cpu: str = "1"
    memory: str = "2Gi"
    # The most one job may ask for; larger requests are refused at submission (Kueue would never admit them).
    max_cpu: str = "64"
    max_memory: str = "512Gi"
    # Wall-time cap (hours): Kueue deactivates a job that ran this long since admission.
    default_hours: float = Field(default=4, gt=0)
    max_hours: float = Field(default=72, gt=0, le=24 * 366)
    # Jobs not finished yet, per user: more are refused until some end (a runaway loop cannot flood the queue).
    max_active_per_user: int = Field(default=100, ge=1)
    # Finished jobs, their pods and logs are deleted this long after they end.
    keep_finished_hours: float = Field(default=168, gt=0, le=24 * 366)

    _q = field_validator("cpu", "memory", "max_cpu", "max_memory", mode="before")(
        lambda cls, v: _check_quantity(v))

    @model_validator(mode="after")
    def _hours(self) -> Jobs:
        if self.default_hours > self.max_hours:
            raise ValueError("default_hours must be at most max_hours")
        return self


class DaskGroup(Strict):
    """What one group's Dask clusters may use (aifacility.dask). Sizes are per worker; Kueue admits each worker
    pod under the group's quota, so these bound one request, not the group's share."""

    # What a worker gets when the user asks for nothing: `GatewayCluster()` must just work.
    worker_cores: int = Field(default=1, ge=1, le=256)
    worker_memory: str = "4Gi"
    max_worker_cores: int = Field(default=4, ge=1, le=256)
    max_worker_memory: str = "16Gi"
    # Accelerator names a worker may ask for (one device per worker). Unset: the GPUs and MIG slices of the
    # group's Kueue quota; [] for none.
    accelerators: list[str] | None = None
    # Workers per cluster (dask-gateway's cluster_max_workers: larger scale requests are cut to it).
    max_workers: int = Field(default=10, ge=0, le=10_000)
    # Clusters one user may have at once in this group (dask-gateway has no per-user limit of its own).
    max_clusters_per_user: int = Field(default=2, ge=1, le=100)

    _q = field_validator("worker_memory", "max_worker_memory", mode="before")(
        lambda cls, v: _check_quantity(v))

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> DaskGroup:
        if self.worker_cores > self.max_worker_cores:
            raise ValueError("worker_cores must be at most max_worker_cores")
        if parse_quantity(self.worker_memory) > parse_quantity(self.max_worker_memory):
            raise ValueError("worker_memory must be at most max_worker_memory")
        return self


class Dask(Strict):
    """Dask clusters from the sessions through dask-gateway (aifacility.dask). Every group with a queue in
    `queues.groups` may start clusters, with `groups.<g>` or else `default` as its limits."""

    enabled: bool = True
    # The image of schedulers and workers (the client's packages must match): the first of `images:` if unset.
    image: str | None = None
    # The group a cluster is charged to when the user names none: else `jobs.default_group`, else the first
    # (alphabetically) of the user's groups with a queue.
    default_group: str | None = None
    # Schedulers are not queued (a gated scheduler would hold its whole cluster): keep them small.
    scheduler_cores: int = Field(default=1, ge=1, le=16)
    scheduler_memory: str = "2Gi"
    # A cluster with no work for this long is shut down (dask-gateway's idle_timeout; always on here).
    idle_timeout_minutes: float = Field(default=30, gt=0, le=7 * 24 * 60)
    # A worker not connected this long after its pod was created is replaced. Workers wait in Kueue for quota,
    # so this is long; a failed pod is noticed at once anyway.
    worker_start_timeout_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    default: DaskGroup = DaskGroup()
    groups: dict[str, DaskGroup] = {}

    _q = field_validator("scheduler_memory", mode="before")(lambda cls, v: _check_quantity(v))

    def limits(self, group: str) -> DaskGroup:
        return self.groups.get(group, self.default)


class Accounting(Strict):
    """How reports turn usage into GPU-equivalents, energy and CO2-equivalent, and the site name for APEL."""

    # Watts per unit used: per GPU or FPGA model (the record's `model`, e.g. the `nvidia.com/gpu.product` label),
    # per CPU core (`cpu`), per GiB of memory (`memory`). A model without a figure counts no energy (the report
    # lists it).
    power_watts: dict[str, Annotated[float, Field(ge=0, le=100_000)]] = {"cpu": 10.0, "memory": 0.375}
    # A MIG slice whose profile has no figure draws this GPU power times its fraction.
    mig_gpu_watts: float = Field(default=400.0, ge=0, le=100_000)
    # Compute slices of a whole MIG-capable GPU (A100, H100: 7): profile `3g.40gb` is 3/7 of a GPU.
    gpu_slices: int = Field(default=7, ge=1, le=64)
    mig_fraction: dict[str, Annotated[float, Field(gt=0, le=1)]] = {}  # per profile, where 3/7 is not right
    grid_gco2e_per_kwh: float = Field(default=250.0, ge=0, le=5_000)  # the grid's carbon intensity
    site: str = Field(default="aifacility", min_length=1, max_length=128)  # the APEL site name
    # Offload sites whose jobs are recorded from the batch system's own accounting (`aifacility accounting sacct
    # --site <site>`, run where sacct reaches the site) rather than from their pods: the pod collector leaves
    # those pods alone, so no job is counted twice.
    batch_accounted_sites: list[Annotated[str, Field(min_length=1, max_length=128)]] = []


class EventsSettings(Strict):
    """Events (hackathons, schools) that hold accelerators for their participants (aifacility.events)."""

    # The queue group (`queues.groups.<queue>`, nominal quota 0) whose ClusterQueue gets an event's reservation
    # during its window, taken from the other groups' nominal quotas. Unset: events cannot reserve.
    queue: str | None = None
    # The reservation is in force this long before the start, so that the first session does not wait.
    reserve_lead_minutes: float = Field(default=15, ge=0, le=24 * 60)


class HostGPUs(Strict):
    """The embedded facility's own machine's NVIDIA GPUs, served as its node `host` (as `aifacility up --host-gpus`
    does): for a GPU server without Kubernetes. A cluster ignores it: there the GPU operator advertises them."""

    enabled: bool = False
    # Time-slicing: each whole GPU advertised this many times, as the NVIDIA device plugin's sharing option does
    # (`aifacility up --gpu-replicas` overrides it).
    replicas: int = Field(default=1, ge=1, le=64)


class Facility(Strict):
    apiVersion: Literal["aifacility/v1"] = "aifacility/v1"  # Kubernetes-style key
    kind: Literal["Facility"] = "Facility"
    name: str = Field(pattern=DNS_LABEL)
    namespace: str = Field(default="aifacility", pattern=DNS_LABEL)
    accelerators: list[Accelerator] = []
    nodes: list[Node] = []
    images: list[Image] = Field(min_length=1)
    profiles: list[Profile] = Field(min_length=1)
    storage: Storage = Storage()
    iam: IAM = IAM()
    quotas: Quotas = Quotas()
    # Kueue flavors, cohort, per-group quotas, offload targets; checked against the fields above.
    queues: QueuesField = Queues()
    # Session lifetimes, extensions and idle culling.
    sessions: Sessions = Sessions()
    # Batch and notebook jobs from the sessions.
    jobs: Jobs = Jobs()
    # Dask clusters from the sessions (dask-gateway).
    dask: Dask = Dask()
    # Usage reports: energy, carbon, MIG weighting.
    accounting: Accounting = Accounting()
    # Events: the queue their reservations go to.
    events: EventsSettings = EventsSettings()
    # The embedded facility's machine's own GPUs as a node.
    host_gpus: HostGPUs = HostGPUs()

    @model_validator(mode="after")
    def _references(self) -> Facility:
        accels = {a.name for a in self.accelerators}
        images = {i.name for i in self.images}
        for what, items in (("accelerators", self.accelerators), ("nodes", self.nodes),
                            ("images", self.images), ("profiles", self.profiles)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{what}: the name '{item.name}' is used twice")
                seen.add(item.name)
        for node in self.nodes:
            resources_seen: dict[str, str] = {}
            for a in node.accelerators:
                if a not in accels:
                    raise ValueError(f"nodes[{node.name}].accelerators: unknown accelerator '{a}' "
                                     f"(known: {', '.join(sorted(accels)) or 'none'})")
                res = self.accelerator(a).resource
                if res in resources_seen:
                    raise ValueError(f"nodes[{node.name}].accelerators: '{a}' and '{resources_seen[res]}' are "
                                     f"both advertised as {res}, so a pod could not choose between them")
                resources_seen[res] = a
        for p in self.profiles:
            for i in p.images:
                if i not in images:
                    raise ValueError(f"profiles[{p.name}].images: unknown image '{i}' "
                                     f"(known: {', '.join(sorted(images))})")
            if p.accelerator and p.accelerator.name not in accels:
                raise ValueError(f"profiles[{p.name}].accelerator: unknown accelerator "
                                 f"'{p.accelerator.name}' (known: {', '.join(sorted(accels)) or 'none'})")
        for scope, limits in [*self.quotas.groups.items(), *self.quotas.users.items(),
                              ("default_user", self.quotas.default_user)]:
            for a in limits.accelerators:
                if a not in accels:
                    raise ValueError(f"quotas[{scope}].accelerators: unknown accelerator '{a}'")
        if self.jobs.default_image is not None and self.jobs.default_image not in images:
            raise ValueError(f"jobs.default_image: unknown image '{self.jobs.default_image}' "
                             f"(known: {', '.join(sorted(images))})")
        if self.jobs.default_group is not None and self.jobs.default_group not in self.queues.groups:
            raise ValueError(f"jobs.default_group: '{self.jobs.default_group}' has no queue in queues.groups "
                             f"(known: {', '.join(sorted(self.queues.groups)) or 'none'})")
        self._check_dask(accels, images)
        if self.queues.enabled and self.events.queue is not None and self.events.queue not in self.queues.groups:
            raise ValueError(f"events.queue: '{self.events.queue}' has no queue in queues.groups "
                             f"(known: {', '.join(sorted(self.queues.groups)) or 'none'})")
        return self

    def _check_dask(self, accels: set[str], images: set[str]) -> None:
        d = self.dask
        if not d.enabled:
            return
        queued = sorted(self.queues.groups)
        if d.image is not None and d.image not in images:
            raise ValueError(f"dask.image: unknown image '{d.image}' (known: {', '.join(sorted(images))})")
        if d.default_group is not None and d.default_group not in self.queues.groups:
            raise ValueError(f"dask.default_group: '{d.default_group}' has no queue in queues.groups "
                             f"(known: {', '.join(queued) or 'none'})")
        for name, g in [("default", d.default), *((f"groups.{k}", v) for k, v in d.groups.items())]:
            if name != "default" and name.removeprefix("groups.") not in self.queues.groups:
                raise ValueError(f"dask.{name}: the group has no queue in queues.groups, and Dask workers are "
                                 f"queued there (known: {', '.join(queued) or 'none'}; without queues, set "
                                 f"dask.enabled: false)")
            for a in g.accelerators or []:
                if a not in accels:
                    raise ValueError(f"dask.{name}.accelerators: unknown accelerator '{a}' "
                                     f"(known: {', '.join(sorted(accels)) or 'none'})")

    def accelerator(self, name: str) -> Accelerator:
        for a in self.accelerators:
            if a.name == name:
                return a
        raise KeyError(name)

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise KeyError(name)


def is_dns_label(name: str) -> bool:
    return re.match(DNS_LABEL, name) is not None and len(name) <= 63
